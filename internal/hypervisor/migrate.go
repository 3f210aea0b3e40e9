package hypervisor

import "context"

// MigrationReleaser is implemented by drivers whose Delete would remove
// what a migrated VM still uses elsewhere (disks on a shared pool). After
// a migration completed, the source agent drops its leftover copy of the
// VM (a cold-migrated VM's records, a live-migrated VM's paused process if
// the driver kept one) with ReleaseMigrated when the driver has it, and
// with Delete otherwise. ReleaseMigrated of an unknown id returns
// ErrNotFound.
type MigrationReleaser interface {
	ReleaseMigrated(ctx context.Context, id string) error
}

// MigrationSecurer is implemented by drivers whose migration streams run
// directly between hosts (QEMU). The agent hands it the host's identity
// from the cluster CA as soon as it has one (and again after renewing
// it): the CA certificate and one certificate (serverAuth + clientAuth,
// naming the host) with its key, all PEM. From then on incoming streams
// require mutual TLS and outgoing ones use it.
type MigrationSecurer interface {
	SetMigrationIdentity(caPEM, certPEM, keyPEM []byte) error
}

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

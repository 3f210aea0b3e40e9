package qemu

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/qmp"
)

// TLS for migration. QEMU's tls-creds-x509 object reads a directory laid
// out as below; the same directory serves both ends of a migration on a
// host, since every host is a server (incoming) and a client (outgoing):
//
//	ca-cert.pem      the cluster CA (trust anchor for both ends)
//	server-cert.pem  this host's certificate (serverAuth), its key:
//	server-key.pem
//	client-cert.pem  this host's client certificate (clientAuth; may be
//	client-key.pem   the same certificate as the server's), its key
//
// Both ends verify each other (verify-peer on the server). The same files
// secure the NBD disk mirror (nbd-server-start tls-creds / the nbd client
// node's tls-creds) and the small control connection (Go crypto/tls).

// TLS file names in QEMU's layout.
const (
	TLSCACert     = "ca-cert.pem"
	TLSServerCert = "server-cert.pem"
	TLSServerKey  = "server-key.pem"
	TLSClientCert = "client-cert.pem"
	TLSClientKey  = "client-key.pem"
)

// QOM ids of the TLS credentials objects.
const (
	tlsServerObj = "vpool-mig-tls-srv"
	tlsClientObj = "vpool-mig-tls-cli"
)

// ErrMigrationTLS wraps every migration TLS setup problem.
var ErrMigrationTLS = errors.New("qemu: migration TLS")

// WriteMigrationTLS lays out dir for QEMU from PEM bytes: the cluster CA
// certificate and one certificate + key of this host, used as both the
// server and the client certificate (it should carry both serverAuth and
// clientAuth, and name the host's migration address). Files are 0600.
func WriteMigrationTLS(dir string, caPEM, certPEM, keyPEM []byte) error {
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return fmt.Errorf("%w: certificate and key: %w", ErrMigrationTLS, err)
	}
	if b, _ := pem.Decode(caPEM); b == nil || b.Type != "CERTIFICATE" {
		return fmt.Errorf("%w: CA is not a PEM certificate", ErrMigrationTLS)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%w: %w", ErrMigrationTLS, err)
	}
	for name, b := range map[string][]byte{TLSCACert: caPEM, TLSServerCert: certPEM, TLSServerKey: keyPEM,
		TLSClientCert: certPEM, TLSClientKey: keyPEM} {
		if err := writeFileAtomic(filepath.Join(dir, name), b, 0o600); err != nil {
			return fmt.Errorf("%w: %w", ErrMigrationTLS, err)
		}
	}
	return nil
}

// migrationTLSDirName is where SetMigrationIdentity lays out the material
// under the state dir.
const migrationTLSDirName = "migration-tls"

var _ hypervisor.MigrationSecurer = (*Driver)(nil)

// SetMigrationIdentity lays out the host's identity from the cluster CA
// (see WriteMigrationTLS) under StateDir/migration-tls and turns migration
// TLS on there, unless Config.MigrationTLSDir names another directory, in
// which case that one is rewritten. Migrations already under way keep the
// material they started with (QEMU read it then).
func (d *Driver) SetMigrationIdentity(caPEM, certPEM, keyPEM []byte) error {
	dir := d.cfg.MigrationTLSDir
	if dir == "" {
		dir = filepath.Join(d.cfg.StateDir, migrationTLSDirName)
	}
	if err := WriteMigrationTLS(dir, caPEM, certPEM, keyPEM); err != nil {
		return err
	}
	if _, err := tlsServerName(dir); err != nil {
		return err
	}
	d.migTLS.Store(&dir)
	return nil
}

// migrationTLSDir is the TLS material of new migrations; "" means plain TCP.
func (d *Driver) migrationTLSDir() string {
	if p := d.migTLS.Load(); p != nil {
		return *p
	}
	return d.cfg.MigrationTLSDir
}

// tlsSide loads one side's certificate from dir and the CA pool.
func tlsSide(dir string, server bool) (tls.Certificate, *x509.CertPool, error) {
	certF, keyF := TLSClientCert, TLSClientKey
	if server {
		certF, keyF = TLSServerCert, TLSServerKey
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, certF), filepath.Join(dir, keyF))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %s: %w", ErrMigrationTLS, dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, TLSCACert))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %w", ErrMigrationTLS, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return tls.Certificate{}, nil, fmt.Errorf("%w: %s holds no certificate", ErrMigrationTLS, TLSCACert)
	}
	return cert, pool, nil
}

// tlsServerName is the name the source must check the target's
// certificate against: its first DNS name, else first IP, else CN.
func tlsServerName(dir string) (string, error) {
	cert, _, err := tlsSide(dir, true)
	if err != nil {
		return "", err
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrMigrationTLS, err)
	}
	switch {
	case len(leaf.DNSNames) > 0:
		return leaf.DNSNames[0], nil
	case len(leaf.IPAddresses) > 0:
		return leaf.IPAddresses[0].String(), nil
	case leaf.Subject.CommonName != "":
		return leaf.Subject.CommonName, nil
	}
	return "", fmt.Errorf("%w: %s names no host", ErrMigrationTLS, TLSServerCert)
}

// controlServerTLS is the control listener's config: mutual TLS against
// the cluster CA.
func controlServerTLS(dir string) (*tls.Config, error) {
	cert, pool, err := tlsSide(dir, true)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}, nil
}

func controlClientTLS(dir, serverName string) (*tls.Config, error) {
	cert, pool, err := tlsSide(dir, false)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: serverName,
		MinVersion: tls.VersionTLS12}, nil
}

// tlsObject is the object-add argument of QEMU's credentials.
func tlsObject(dir string, server bool) map[string]any {
	if server {
		return map[string]any{"qom-type": "tls-creds-x509", "id": tlsServerObj, "dir": dir, "endpoint": "server", "verify-peer": true}
	}
	return map[string]any{"qom-type": "tls-creds-x509", "id": tlsClientObj, "dir": dir, "endpoint": "client", "verify-peer": true}
}

// addTLS loads the migration credentials of dir into rec's QEMU. QEMU
// reads them as the VM's user, which cannot read dir (root 0600): they
// are copied into the VM directory for the VM's group (0640) and removed
// once object-add has loaded them (vmuser.go). A QEMU that migrates holds
// the key in memory anyway, so the key is not the host's identity: the
// agent hands the driver a migration-only certificate (pki.RoleMigration),
// which peers verify as the host's and the servers refuse as an identity
// (docs/security.md VP-11). No other VM ever sees it.
func (d *Driver) addTLS(ctx context.Context, q *qmp.Conn, rec *record, dir string, server bool) error {
	if d.users == nil || rec.User == nil {
		return q.ObjectAdd(ctx, tlsObject(dir, server))
	}
	tmp, err := os.MkdirTemp(d.vmDir(rec.Config.ID), ".tls-")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMigrationTLS, err)
	}
	defer os.RemoveAll(tmp)
	gid := int(rec.User.GID)
	if err := errors.Join(os.Chown(tmp, 0, gid), os.Chmod(tmp, 0o750)); err != nil {
		return fmt.Errorf("%w: %w", ErrMigrationTLS, err)
	}
	for _, name := range []string{TLSCACert, TLSServerCert, TLSServerKey, TLSClientCert, TLSClientKey} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue // QEMU says which one it misses
		}
		if err == nil {
			err = writeFileAtomic(filepath.Join(tmp, name), b, 0o640)
		}
		if err == nil {
			err = os.Chown(filepath.Join(tmp, name), 0, gid)
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrMigrationTLS, err)
		}
	}
	return q.ObjectAdd(ctx, tlsObject(tmp, server))
}

// resetMigration puts a VM's migration settings back to what a fresh
// QEMU has: no TLS credentials (the objects deleted) and no post-copy,
// auto-converge or multifd (a snapshot to a file refuses multifd). Both ends call it after a migration; a memory snapshot
// calls it before it saves, since it is an outgoing migration itself.
func resetMigration(ctx context.Context, p *process) error {
	q := p.qmp
	caps := []qmp.Args{{"capability": "auto-converge", "state": false}, {"capability": "postcopy-ram", "state": false},
		{"capability": "multifd", "state": false}}
	err := q.Execute(ctx, "migrate-set-capabilities", qmp.Args{"capabilities": caps}, nil)
	if perr := q.Execute(ctx, "migrate-set-parameters", qmp.Args{"tls-creds": "", "tls-hostname": ""}, nil); err == nil {
		err = perr
	}
	for _, obj := range []string{tlsClientObj, tlsServerObj} {
		q.ObjectDel(ctx, obj) // absent unless a migration added it
	}
	return err
}

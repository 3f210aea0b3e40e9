package agent_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/pki"
)

// securingDriver is a sim driver that keeps the migration identity the
// agent hands it (hypervisor.MigrationSecurer).
type securingDriver struct {
	hypervisor.Driver
	mu            sync.Mutex
	certPEM, keyP []byte
}

func (d *securingDriver) SetMigrationIdentity(caPEM, certPEM, keyPEM []byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.certPEM, d.keyP = certPEM, keyPEM
	return nil
}

func (d *securingDriver) role() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, _ := pem.Decode(d.certPEM)
	if b == nil {
		return ""
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil || len(c.Subject.OrganizationalUnit) == 0 {
		return ""
	}
	return c.Subject.OrganizationalUnit[0]
}

// The driver's migration streams get a migration-only certificate (QEMU
// holds its key), not the agent's identity; a server from before
// migration certificates leaves the host's own, as before.
func TestMigrationsGetAMigrationOnlyKey(t *testing.T) {
	for _, c := range []struct {
		name      string
		oldServer bool
		want      string
	}{
		{"migration certificate", false, pki.RoleMigration},
		{"server from before them", true, pki.RoleHost},
	} {
		t.Run(c.name, func(t *testing.T) {
			fs := newFakeServer(t)
			fs.noMigrationCerts = c.oldServer
			d := &securingDriver{Driver: sim.MustHost(sim.Config{Name: "h1"}).Driver()}
			dir := t.TempDir()
			startAgent(t, fs, dir, fs.token, d)
			eventually(t, "the driver has a migration identity", func() bool { return d.role() != "" })
			if got := d.role(); got != c.want {
				t.Fatalf("the driver's migration certificate has role %q, want %q", got, c.want)
			}
			own, err := os.ReadFile(filepath.Join(dir, "agent.key"))
			if err != nil {
				t.Fatal(err)
			}
			d.mu.Lock()
			same := bytes.Equal(d.keyP, own)
			d.mu.Unlock()
			if same != c.oldServer {
				t.Fatalf("the driver got the agent's own key: %v, want %v", same, c.oldServer)
			}
		})
	}
}

package qemu

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/hypervisortest"
)

// TestAcceptance runs the driver acceptance suite against real QEMU with
// the test guest (TCG here; KVM where usable).
func TestAcceptance(t *testing.T) {
	g := heavy(t)
	cfgs := map[hypervisor.Driver]Config{}
	hypervisortest.Run(t, hypervisortest.Harness{
		New: func(t *testing.T) hypervisor.Driver {
			cfg := testConfig(t, shortTempDir(t))
			d := newDriver(t, cfg)
			cfgs[d] = cfg
			return d
		},
		Reopen: func(t *testing.T, old hypervisor.Driver) hypervisor.Driver {
			cfg := cfgs[old]
			old.(*Driver).Close() // the agent "dies"; its QEMUs do not
			d := newDriver(t, cfg)
			cfgs[d] = cfg
			return d
		},
		Config: func(t *testing.T, name string) hypervisor.VMConfig {
			return vmConfig(g, name)
		},
		WaitReady: func(t *testing.T, d hypervisor.Driver, id string) {
			waitReady(t, d.(*Driver), id)
		},
		CheckClean: func(t *testing.T, d hypervisor.Driver, id string) {
			checkClean(t, d.(*Driver), id)
		},
		WriteDisk: func(t *testing.T, d hypervisor.Driver, id, disk string, off, n int64, pat byte) {
			guestWrite(t, d.(*Driver), id, disk, off, n, pat)
		},
		StopTimeout: 10 * time.Second,
		Timeout:     3 * time.Minute,
	})
}

// checkClean asserts that nothing of VM id is left: no record or VM
// directory, no disk directory in any pool, no QEMU process, no tap.
func checkClean(t *testing.T, d *Driver, id string) {
	t.Helper()
	if _, err := os.Stat(d.vmDir(id)); !os.IsNotExist(err) {
		t.Errorf("VM directory of %s still exists (%v)", id, err)
	}
	for name, dir := range d.cfg.Pools {
		if _, err := os.Stat(filepath.Join(dir, id)); !os.IsNotExist(err) {
			t.Errorf("pool %s still holds disks of %s", name, id)
		}
	}
	if pids := d.ourQEMUs()[id]; len(pids) > 0 {
		t.Errorf("QEMU of %s still running: %v", id, pids)
	}
	for i := 0; i < 4; i++ {
		if linkExists(d.tapName(id, i)) {
			t.Errorf("tap %s of %s still exists", d.tapName(id, i), id)
		}
	}
	if _, err := d.keys.VolumeKey(context.Background(), id, "root", false); err == nil {
		t.Errorf("volume key of %s still exists", id)
	}
}

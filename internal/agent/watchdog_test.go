package agent_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
)

// firingDriver lists its VMs with the watchdog firing set, as the QEMU
// driver does after QEMU's WATCHDOG event.
type firingDriver struct {
	hypervisor.Driver
	mu     sync.Mutex
	firing map[string]*model.WatchdogFiring
}

func (d *firingDriver) fire(id string, w model.WatchdogFiring) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.firing[id] = &w
}

func (d *firingDriver) List(ctx context.Context) ([]hypervisor.Info, error) {
	infos, err := d.Driver.List(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range infos {
		if w := d.firing[infos[i].ID]; w != nil {
			c := *w
			infos[i].Watchdog = &c
		}
	}
	return infos, err
}

// TestWatchdogFiringIsReported: a firing the driver lists reaches the
// server with the VM's status (the VM keeps running: a reset changes no
// phase), once; a second firing is reported again.
func TestWatchdogFiringIsReported(t *testing.T) {
	fs := newFakeServer(t)
	d := &firingDriver{Driver: sim.MustHost(sim.Config{Name: "h1"}).Driver(), firing: map[string]*model.WatchdogFiring{}}
	startAgent(t, fs, t.TempDir(), fs.token, d)
	fs.put(newVM("a"))
	eventually(t, "a running", func() bool { v, _ := fs.vm("default/a"); return v.Status.Phase == model.PhaseRunning })

	at := time.Now().UTC()
	d.fire("default.a", model.WatchdogFiring{At: at, Action: "reset", Count: 1})
	eventually(t, "the firing reported", func() bool {
		v, _ := fs.vm("default/a")
		return v.Status.Watchdog != nil && v.Status.Watchdog.At.Equal(at) && v.Status.Phase == model.PhaseRunning
	})
	d.fire("default.a", model.WatchdogFiring{At: at.Add(time.Second), Action: "reset", Count: 2})
	eventually(t, "the second firing reported", func() bool {
		v, _ := fs.vm("default/a")
		return v.Status.Watchdog != nil && v.Status.Watchdog.Count == 2
	})
	n := 0
	for _, r := range fs.reportsFor("default/a") {
		if r.Watchdog != nil && r.Watchdog.Count == 1 {
			n++
		}
	}
	if n == 0 || n > 2 {
		t.Fatalf("the first firing was sent %d times, want once (twice at most if a pass raced the server's answer)", n)
	}
}

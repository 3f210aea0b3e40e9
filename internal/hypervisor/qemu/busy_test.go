package qemu

import (
	"context"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// TestListDoesNotWaitForBusyVM holds one VM's lock, as a slow Stop does,
// and checks that List and Stats answer from the last sample instead of
// waiting (the agent's converge and heartbeat call them for every VM).
func TestListDoesNotWaitForBusyVM(t *testing.T) {
	d := newDriver(t, Config{StateDir: shortTempDir(t), Network: NetNone, Accel: "tcg", NoCgroups: true, Logger: testLogger(t)})
	ctx := context.Background()
	for _, name := range []string{"busy", "idle"} {
		cfg := hypervisor.VMConfig{ID: "p." + name, Name: name, Project: "p",
			Spec: model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB, Power: model.PowerStopped}}
		mustDo(t, "Create "+name, d.Create(ctx, cfg))
	}
	if _, err := d.List(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := d.get("p.busy")
	if err != nil {
		t.Fatal(err)
	}
	v.mu.Lock()
	released := false
	defer func() {
		if !released {
			v.mu.Unlock()
		}
	}()
	type answer struct {
		infos []hypervisor.Info
		err   error
	}
	done := make(chan answer, 1)
	go func() {
		infos, err := d.List(ctx)
		if err == nil {
			_, err = d.Stats(ctx, "p.busy")
		}
		done <- answer{infos, err}
	}()
	select {
	case a := <-done:
		if a.err != nil {
			t.Fatal(a.err)
		}
		if len(a.infos) != 2 || a.infos[0].ID != "p.busy" || a.infos[0].State != hypervisor.StateStopped {
			t.Errorf("List while p.busy is held = %+v, want both VMs with the cached state", a.infos)
		}
	case <-time.After(time.Minute): // a deadlock guard, not a timing assertion
		t.Fatal("List blocked behind a VM held by another operation")
	}
	v.mu.Unlock()
	released = true
}

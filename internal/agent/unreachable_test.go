package agent_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
)

// unreachableDriver lists the VMs in unknown as the QEMU driver lists a VM
// whose monitor does not answer, and records every call that would act
// on a VM.
type unreachableDriver struct {
	hypervisor.Driver
	mu      sync.Mutex
	unknown map[string]bool
	calls   []string
}

func (d *unreachableDriver) set(id string, unknown bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.unknown[id] = unknown
}

func (d *unreachableDriver) record(call, id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.unknown[id] {
		d.calls = append(d.calls, call+" "+id)
	}
}

func (d *unreachableDriver) acted() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.calls...)
}

func (d *unreachableDriver) List(ctx context.Context) ([]hypervisor.Info, error) {
	infos, err := d.Driver.List(ctx)
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range infos {
		if d.unknown[infos[i].ID] {
			infos[i].State, infos[i].Reason = hypervisor.StateUnknown, "monitor unreachable: test"
		}
	}
	return infos, err
}

func (d *unreachableDriver) Start(ctx context.Context, id string) error {
	d.record("start", id)
	return d.Driver.Start(ctx, id)
}

func (d *unreachableDriver) Stop(ctx context.Context, id string, timeout time.Duration) error {
	d.record("stop", id)
	return d.Driver.Stop(ctx, id, timeout)
}

func (d *unreachableDriver) Kill(ctx context.Context, id string) error {
	d.record("kill", id)
	return d.Driver.Kill(ctx, id)
}

func (d *unreachableDriver) Delete(ctx context.Context, id string) error {
	d.record("delete", id)
	return d.Driver.Delete(ctx, id)
}

func (d *unreachableDriver) Resize(ctx context.Context, id string, vcpus int, memory model.Bytes) error {
	d.record("resize", id)
	return d.Driver.Resize(ctx, id, vcpus, memory)
}

// TestUnreachableVMIsReportedAndLeftAlone: a VM the driver lists as
// unknown (its QEMU runs, its monitor does not answer) is reported as
// such and never started, stopped, resized or killed — even when its spec
// asks for a change — until the driver reaches it again.
func TestUnreachableVMIsReportedAndLeftAlone(t *testing.T) {
	fs := newFakeServer(t)
	d := &unreachableDriver{Driver: sim.MustHost(sim.Config{Name: "h1"}).Driver(), unknown: map[string]bool{}}
	startAgent(t, fs, t.TempDir(), fs.token, d)
	fs.put(newVM("a"))
	eventually(t, "a running", func() bool { v, _ := fs.vm("default/a"); return v.Status.Phase == model.PhaseRunning })

	d.set("default.a", true)
	eventually(t, "a reported unknown", func() bool {
		v, _ := fs.vm("default/a")
		return v.Status.Phase == model.PhaseUnknown && strings.Contains(v.Status.LastError, "monitor unreachable")
	})
	// The user asks for changes meanwhile: they wait.
	fs.update("default/a", func(v *model.VM) { v.Spec.Memory = 512 * model.MiB; v.Spec.RestartNonce++ })
	time.Sleep(500 * time.Millisecond) // several converge passes
	if calls := d.acted(); len(calls) > 0 {
		t.Fatalf("the agent acted on an unreachable VM: %v", calls)
	}
	if in, ok := info(t, d.Driver, "default.a"); !ok || in.State != hypervisor.StateRunning {
		t.Fatalf("the unreachable VM was touched: %+v", in)
	}

	// Reachable again: converged as usual.
	d.set("default.a", false)
	eventually(t, "a running again", func() bool {
		v, _ := fs.vm("default/a")
		return v.Status.Phase == model.PhaseRunning && v.Status.LastError == ""
	})
}

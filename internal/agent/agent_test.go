package agent_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
)

// running is one agent run in a goroutine.
type running struct {
	a      *agent.Agent
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Fatalf("agent Run: %v", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop")
	}
}

func startAgent(t *testing.T, fs *fakeServer, dir, token string, d hypervisor.Driver) *running {
	t.Helper()
	a, err := agent.New(agent.Config{
		ServerURL: fs.URL(), JoinToken: token, StateDir: dir, HostName: "h1",
		Labels: map[string]string{"zone": "a"}, Driver: d, Networks: []string{"lan", "storage"},
		HeartbeatInterval: 50 * time.Millisecond, StatusInterval: 100 * time.Millisecond, PollWait: time.Second,
		StopTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{a: a, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = a.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func info(t *testing.T, d hypervisor.Driver, id string) (hypervisor.Info, bool) {
	t.Helper()
	infos, err := d.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.ID == id {
			return in, true
		}
	}
	return hypervisor.Info{}, false
}

func TestParseJoinToken(t *testing.T) {
	hash := "aa" + string(make([]byte, 0))
	for i := 0; i < 31; i++ {
		hash += "bb"
	}
	tests := []struct {
		in   string
		good bool
	}{
		{"vpool1." + hash + ".secret", true},
		{"vpool2." + hash + ".secret", false},
		{"vpool1.abc.secret", false},
		{"vpool1." + hash + ".", false},
		{"", false},
		{"vpool1." + hash, false},
	}
	for _, tt := range tests {
		_, err := agent.ParseJoinToken(tt.in)
		if (err == nil) != tt.good {
			t.Errorf("ParseJoinToken(%q) = %v, want good=%v", tt.in, err, tt.good)
		}
		if err != nil && !errors.Is(err, agent.ErrBadToken) {
			t.Errorf("ParseJoinToken(%q): %v is not ErrBadToken", tt.in, err)
		}
	}
}

func TestJoinThenRestartWithoutToken(t *testing.T) {
	fs := newFakeServer(t)
	dir := t.TempDir()
	d := sim.MustHost(sim.Config{Name: "h1"}).Driver()
	r := startAgent(t, fs, dir, fs.token, d)
	eventually(t, "a heartbeat", func() bool { _, n := fs.lastBeat(); return n > 0 })
	r.stop(t)
	for _, f := range []string{"agent.key", "agent.crt", "ca.crt"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	_, before := fs.lastBeat()
	startAgent(t, fs, dir, "", d)
	eventually(t, "a heartbeat after restart", func() bool { _, n := fs.lastBeat(); return n > before })
	fs.mu.Lock()
	joins := fs.joins
	fs.mu.Unlock()
	if joins != 1 {
		t.Fatalf("agent joined %d times, want once", joins)
	}
	hb, _ := fs.lastBeat()
	if hb.Host != "h1" || hb.Capacity.CPUs != 8 || hb.Driver != "sim" || hb.Labels["zone"] != "a" || len(hb.Networks) != 2 {
		t.Fatalf("heartbeat = %+v", hb)
	}
}

func TestJoinRefusals(t *testing.T) {
	fs := newFakeServer(t)
	other, err := pki.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		token string
		want  error
	}{
		{"other CA", pki.FormatJoinToken(other.Hash(), "s3cret"), agent.ErrCAMismatch},
		{"no token", "", agent.ErrNotJoined},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := agent.New(agent.Config{ServerURL: fs.URL(), JoinToken: tt.token, StateDir: t.TempDir(), HostName: "h1",
				Driver: sim.MustHost(sim.Config{}).Driver()})
			if err != nil {
				t.Fatal(err)
			}
			err = a.Run(context.Background())
			if !errors.Is(err, tt.want) {
				t.Fatalf("Run = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("wrong secret", func(t *testing.T) {
		a, _ := agent.New(agent.Config{ServerURL: fs.URL(), JoinToken: pki.FormatJoinToken(fs.ca.Hash(), "nope"), StateDir: t.TempDir(), HostName: "h1",
			Driver: sim.MustHost(sim.Config{}).Driver()})
		if err := a.Run(context.Background()); err == nil {
			t.Fatal("Run with a wrong secret succeeded")
		}
	})
}

func TestConvergeLifecycle(t *testing.T) {
	fs := newFakeServer(t)
	host := sim.MustHost(sim.Config{Name: "h1"})
	d := host.Driver()
	startAgent(t, fs, t.TempDir(), fs.token, d)
	const key, id = "default/web", "default.web"
	phase := func(want model.Phase) func() bool {
		return func() bool { v, ok := fs.vm(key); return ok && v.Status.Phase == want }
	}
	fs.put(newVM("web"))
	eventually(t, "web running", phase(model.PhaseRunning))
	in, _ := info(t, d, id)
	if in.State != hypervisor.StateRunning {
		t.Fatalf("driver state %s", in.State)
	}
	started := in.StartedAt

	steps := []struct {
		name   string
		change func(*model.VM)
		want   model.Phase
		check  func(hypervisor.Info) bool
	}{
		{"stop", func(v *model.VM) { v.Spec.Power = model.PowerStopped; v.Status.Phase = model.PhaseStopping }, model.PhaseStopped,
			func(in hypervisor.Info) bool { return in.State == hypervisor.StateStopped }},
		{"resize stopped", func(v *model.VM) { v.Spec.VCPUs = 2; v.Spec.Memory = 512 * model.MiB }, model.PhaseStopped,
			func(in hypervisor.Info) bool { return in.VCPUs == 2 && in.Memory == 512*model.MiB }},
		{"start", func(v *model.VM) { v.Spec.Power = model.PowerRunning; v.Status.Phase = model.PhaseCreating }, model.PhaseRunning,
			func(in hypervisor.Info) bool { return in.State == hypervisor.StateRunning && in.VCPUs == 2 }},
		{"controls", func(v *model.VM) { v.Spec.Controls = model.Controls{CPUShares: 100} }, model.PhaseRunning,
			func(in hypervisor.Info) bool { return in.Config.Spec.Controls.CPUShares == 100 }},
		{"shrink needs restart", func(v *model.VM) { v.Spec.VCPUs = 1 }, model.PhaseRunning,
			func(in hypervisor.Info) bool { return in.VCPUs == 2 }},
		{"restart applies the shrink", func(v *model.VM) { v.Spec.RestartNonce = 7 }, model.PhaseRunning,
			func(in hypervisor.Info) bool { return in.VCPUs == 1 && in.StartedAt.After(started) }},
	}
	for _, s := range steps {
		fs.update(key, s.change)
		eventually(t, s.name, func() bool {
			v, ok := fs.vm(key)
			in, _ := info(t, d, id)
			return ok && v.Status.Phase == s.want && s.check(in)
		})
	}
	// the driver restarts before the agent reports it: wait for the report
	eventually(t, "restart nonce 7 reported", func() bool {
		v, ok := fs.vm(key)
		return ok && v.Status.AppliedRestartNonce == 7
	})
	// Delete: the agent removes the VM and reports it gone.
	fs.update(key, func(v *model.VM) { now := time.Now(); v.DeletedAt = &now; v.Status.Phase = model.PhaseDeleting })
	eventually(t, "web gone", func() bool { _, ok := fs.vm(key); _, there := info(t, d, id); return !ok && !there })
}

func TestFailedStartIsReported(t *testing.T) {
	fs := newFakeServer(t)
	d := sim.MustHost(sim.Config{Name: "h1", Memory: model.GiB}).Driver()
	startAgent(t, fs, t.TempDir(), fs.token, d)
	big := newVM("big")
	big.Spec.Memory = 2 * model.GiB
	fs.put(big)
	eventually(t, "big failed", func() bool {
		v, _ := fs.vm("default/big")
		return v.Status.Phase == model.PhaseFailed && v.Status.LastError != ""
	})
	// The half-made VM is gone, so the scheduler can place it elsewhere.
	// (A later converge pass may try the start again and undo it again:
	// the VM must be gone between tries, not left behind.)
	eventually(t, "the half-made VM removed", func() bool {
		_, ok := info(t, d, "default.big")
		return !ok
	})
}

func TestRestartReattaches(t *testing.T) {
	fs := newFakeServer(t)
	host := sim.MustHost(sim.Config{Name: "h1"})
	dir := t.TempDir()
	r := startAgent(t, fs, dir, fs.token, host.Driver())
	for _, n := range []string{"a", "b", "c"} {
		fs.put(newVM(n))
	}
	for _, n := range []string{"a", "b", "c"} {
		eventually(t, n+" running", func() bool { v, _ := fs.vm("default/" + n); return v.Status.Phase == model.PhaseRunning })
	}
	before, _ := host.Driver().List(context.Background())
	r.stop(t)
	// The agent is gone; its VMs are not.
	mid, _ := host.Driver().List(context.Background())
	for _, in := range mid {
		if in.State != hypervisor.StateRunning {
			t.Fatalf("%s is %s after the agent stopped", in.ID, in.State)
		}
	}
	reports := len(fs.reportsFor("default/a"))
	startAgent(t, fs, dir, "", host.Driver()) // a new driver view: re-attach
	eventually(t, "heartbeats from the new agent", func() bool { hb, _ := fs.lastBeat(); return len(hb.VMs) == 3 })
	time.Sleep(300 * time.Millisecond) // a few converge passes
	after, _ := host.Driver().List(context.Background())
	for i := range after {
		if after[i].State != hypervisor.StateRunning || !after[i].StartedAt.Equal(before[i].StartedAt) || after[i].Pid != before[i].Pid {
			t.Fatalf("re-attach restarted %s: before %+v after %+v", after[i].ID, before[i], after[i])
		}
	}
	if n := len(fs.reportsFor("default/a")); n != reports {
		t.Errorf("re-attach sent %d needless status reports for a converged VM", n-reports)
	}
}

func TestOrphans(t *testing.T) {
	fs := newFakeServer(t)
	host := sim.MustHost(sim.Config{Name: "h1"})
	d := host.Driver()
	ctx := context.Background()
	for _, n := range []string{"unknown", "moved"} {
		cfg := hypervisor.VMConfig{ID: "default." + n, Name: n, Project: "default", UID: "uid-" + n,
			Spec: model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB, Power: model.PowerRunning}}
		if err := d.Create(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		if err := d.Start(ctx, cfg.ID); err != nil {
			t.Fatal(err)
		}
	}
	fs.mu.Lock()
	fs.elsewhere["default/moved"] = true
	fs.mu.Unlock()
	startAgent(t, fs, t.TempDir(), fs.token, d)
	eventually(t, "the unknown VM deleted", func() bool { _, ok := info(t, d, "default.unknown"); return !ok })
	eventually(t, "the moved VM checked", func() bool { return len(fs.reportsFor("default/moved")) > 0 })
	if in, ok := info(t, d, "default.moved"); !ok || in.State != hypervisor.StateRunning {
		t.Fatalf("a VM the server knows elsewhere was touched: %+v %v", in, ok)
	}
}

func TestHeartbeatUsage(t *testing.T) {
	fs := newFakeServer(t)
	d := sim.MustHost(sim.Config{Name: "h1", CPUs: 4, Usage: sim.ConstantUsage(0.5)}).Driver()
	startAgent(t, fs, t.TempDir(), fs.token, d)
	vm := newVM("busy")
	vm.Spec.VCPUs = 2
	fs.put(vm)
	var mu sync.Mutex
	eventually(t, "usage in a heartbeat", func() bool {
		mu.Lock()
		defer mu.Unlock()
		hb, _ := fs.lastBeat()
		return len(hb.VMs) == 1 && hb.VMs[0].Usage.CPUPercent > 90 && hb.VMs[0].Usage.CPUPercent < 110 &&
			hb.Usage.CPUPercent > 20 && hb.Usage.CPUPercent < 30
	})
}

// TestCompactHeartbeat: the agent sends the compact heartbeat body once
// the server offers it (HeartbeatResponse.Accepts), carrying the same
// usage; JSON to a server that does not; and when a server refuses the
// compact body (an older one it failed over to: 415) the same beat goes
// again in JSON, so no renewal is lost.
func TestCompactHeartbeat(t *testing.T) {
	fs := newFakeServer(t)
	fs.offerCompact = true
	d := sim.MustHost(sim.Config{Name: "h1", CPUs: 4, Usage: sim.ConstantUsage(0.5)}).Driver()
	startAgent(t, fs, t.TempDir(), fs.token, d)
	vm := newVM("busy")
	vm.Spec.VCPUs = 2
	fs.put(vm)
	ctypes := func() []string {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return slices.Clone(fs.ctypes)
	}
	eventually(t, "usage in a compact heartbeat", func() bool {
		hb, _ := fs.lastBeat()
		c := ctypes()
		return len(c) > 0 && c[len(c)-1] == api.HeartbeatCompactType && len(hb.VMs) == 1 && hb.VMs[0].Usage.CPUPercent > 90 &&
			hb.Usage.CPUPercent > 20 && hb.Capacity.CPUs == 4
	})
	if c := ctypes(); c[0] != "application/json" {
		t.Fatalf("first beat sent as %q: the agent must wait for the server's offer", c[0])
	}
	fs.mu.Lock()
	fs.offerCompact = false // the agent now beats to a server that does not take it
	switched := len(fs.ctypes)
	fs.mu.Unlock()
	_, n := fs.lastBeat()
	eventually(t, "JSON beats after a refusal", func() bool {
		_, m := fs.lastBeat()
		c := ctypes()
		return m >= n+2 && c[len(c)-1] == "application/json" && c[len(c)-2] == "application/json"
	})
	fs.mu.Lock()
	refused := 0
	for _, c := range fs.ctypes[switched:] {
		if c == api.HeartbeatCompactType {
			refused++
		}
	}
	fs.mu.Unlock()
	if refused > 1 {
		t.Errorf("the agent sent %d compact beats to a server that refused one", refused)
	}
}

// stuckDriver blocks List and Stats while stuck is set, as a QEMU driver
// does while a VM holds its lock through a slow stop.
type stuckDriver struct {
	*sim.Driver
	mu    sync.Mutex
	stuck chan struct{}
}

func (d *stuckDriver) wait(ctx context.Context) {
	d.mu.Lock()
	ch := d.stuck
	d.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
}

func (d *stuckDriver) List(ctx context.Context) ([]hypervisor.Info, error) {
	d.wait(ctx)
	return d.Driver.List(ctx)
}

func (d *stuckDriver) Stats(ctx context.Context, id string) (hypervisor.Stats, error) {
	d.wait(ctx)
	return d.Driver.Stats(ctx, id)
}

func TestHeartbeatSurvivesAStuckDriver(t *testing.T) {
	fs := newFakeServer(t)
	d := &stuckDriver{Driver: sim.MustHost(sim.Config{Name: "h1"}).Driver()}
	startAgent(t, fs, t.TempDir(), fs.token, d)
	eventually(t, "a full heartbeat", func() bool { hb, _ := fs.lastBeat(); return hb.Capacity.CPUs > 0 })
	d.mu.Lock()
	d.stuck = make(chan struct{})
	d.mu.Unlock()
	_, n := fs.lastBeat()
	eventually(t, "heartbeats while the driver is stuck", func() bool { _, m := fs.lastBeat(); return m >= n+3 })
	if hb, _ := fs.lastBeat(); hb.Capacity.CPUs == 0 {
		t.Fatalf("a beat during the stall lost the inventory: %+v", hb)
	}
	d.mu.Lock()
	close(d.stuck)
	d.stuck = nil
	d.mu.Unlock()
}

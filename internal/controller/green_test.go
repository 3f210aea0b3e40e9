package controller

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// greenEnv drives the balancer, power and energy controllers pass by
// pass on a memstore with a fake clock, without goroutines.
type greenEnv struct {
	*env
	r     *reconciler
	power *fakePower
}

// fakePower records power calls; fail makes them fail.
type fakePower struct {
	mu       sync.Mutex
	off, on  []string
	failNext error
}

func (f *fakePower) PowerOff(_ context.Context, h model.Host) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failNext; err != nil {
		f.failNext = nil
		return err
	}
	f.off = append(f.off, h.Name)
	return nil
}

func (f *fakePower) PowerOn(_ context.Context, h model.Host) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.on = append(f.on, h.Name)
	return nil
}

func newGreenEnv(t *testing.T, set model.BalanceSettings) *greenEnv {
	t.Helper()
	e := newEnv(t)
	g := &greenEnv{env: e, power: &fakePower{}}
	g.putSettings(set)
	g.restart()
	return g
}

// restart starts a new leadership term (a new reconciler, empty memory).
func (g *greenEnv) restart() {
	cfg := g.config("s1", nil)
	cfg.Power = g.power
	m := New(cfg)
	g.r = newReconciler(m, m.newTerm(), newCache(m.log))
	g.r.repaired = true
}

func (g *greenEnv) putSettings(set model.BalanceSettings) {
	g.t.Helper()
	if err := set.Validate(); err != nil {
		g.t.Fatal(err)
	}
	if _, _, err := g.st.Txn(context.Background(), nil, []store.Op{store.Put(store.BalanceKey, mustJSON(set))}); err != nil {
		g.t.Fatal(err)
	}
}

// sync refills the cache from the store, as the watches would.
func (g *greenEnv) sync() {
	g.t.Helper()
	for _, src := range g.r.c.sources() {
		kvs, _, err := g.st.List(context.Background(), src.prefix)
		if err != nil {
			g.t.Fatal(err)
		}
		g.r.c.mu.Lock()
		src.reset(kvs)
		g.r.c.mu.Unlock()
	}
}

// step runs one controller after syncing the cache.
func (g *greenEnv) step(run func(context.Context) error) error {
	g.sync()
	return run(context.Background())
}

func (g *greenEnv) must(run func(context.Context) error) {
	g.t.Helper()
	if err := g.step(run); err != nil {
		g.t.Fatal(err)
	}
}

// placeVM creates a VM pinned to host, places it and marks it running at
// cpuPct (100 = one vCPU busy).
func (g *greenEnv) placeVM(name, host string, vcpus int, cpuPct float64) {
	g.t.Helper()
	vm := &model.VM{Meta: model.Meta{Name: name, Project: "p"}, Spec: model.VMSpec{VCPUs: vcpus, Memory: model.GiB,
		Power: model.PowerRunning, Placement: model.Placement{Host: host}}}
	if _, err := g.repo.CreateVM(context.Background(), vm); err != nil {
		g.t.Fatal(err)
	}
	g.must(g.r.schedule)
	if got := g.vm(name).Status.Host; got != host {
		g.t.Fatalf("VM %s placed on %q, want %s", name, got, host)
	}
	g.setVMUsage(name, cpuPct)
}

func (g *greenEnv) setVMUsage(name string, cpuPct float64) {
	g.t.Helper()
	if _, err := g.repo.UpdateVM(context.Background(), "p", name, func(v *model.VM) error {
		v.Status.Phase, v.Status.Usage.CPUPercent = model.PhaseRunning, cpuPct
		return nil
	}); err != nil {
		g.t.Fatal(err)
	}
}

// setHostUsage sets a host's measured CPU (percent of all its CPUs) as
// its agent's heartbeat would, stamping LastSeen.
func (g *greenEnv) setHostUsage(name string, cpuPct float64) {
	g.t.Helper()
	if _, err := g.repo.UpdateHost(context.Background(), name, func(h *model.Host) error {
		h.Usage.CPUPercent, h.LastSeen = cpuPct, g.clock.Now()
		return nil
	}); err != nil {
		g.t.Fatal(err)
	}
}

// syncHostUsage sets every host's CPU from its VMs' usage.
func (g *greenEnv) syncHostUsage() {
	g.t.Helper()
	hosts, _, _ := g.repo.ListHosts(context.Background())
	for _, h := range hosts {
		var pct float64
		for _, vm := range g.vms() {
			if vm.Status.Host == h.Name {
				pct += vm.Status.Usage.CPUPercent
			}
		}
		g.setHostUsage(h.Name, pct/float64(h.Capacity.CPUs))
	}
}

func (g *greenEnv) plan() model.BalancePlan {
	g.t.Helper()
	kv, err := g.st.Get(context.Background(), store.BalancePlanKey)
	if err != nil {
		g.t.Fatal(err)
	}
	var p model.BalancePlan
	if err := json.Unmarshal(kv.Value, &p); err != nil {
		g.t.Fatal(err)
	}
	return p
}

func recommend() model.BalanceSettings {
	s := model.DefaultBalanceSettings()
	s.Mode, s.IntervalSeconds = model.BalanceRecommend, 300
	return s
}

func TestBalancerRecommendsRelievingAndConsolidating(t *testing.T) {
	g := newGreenEnv(t, recommend())
	for _, h := range []string{"h1", "h2", "h3", "h4"} {
		g.addHost(h, 4, 16*model.GiB, nil)
	}
	// h1 is overloaded: 4 VMs of 2 vCPUs ask 4.4 CPUs of 4.
	for _, n := range []string{"a1", "a2", "a3", "a4"} {
		g.putVM(n, "h1", 2, 110, nil)
	}
	// h2 is busy but fine; h3 and h4 carry one light VM each.
	g.putVM("b1", "h2", 2, 120, nil)
	g.putVM("b2", "h2", 2, 80, nil)
	g.putVM("c1", "h3", 1, 15, nil)
	g.putVM("d1", "h4", 1, 10, nil)
	g.syncHostUsage()

	g.must(g.r.balanceRound)
	p := g.plan()
	if p.Mode != model.BalanceRecommend || p.Policy != "vpool" || p.Applied != 0 {
		t.Fatalf("plan header = %+v", p)
	}
	reasons := map[string]int{}
	for _, m := range p.Moves {
		reasons[m.Reason]++
		if m.Detail == "" || m.From == m.To {
			t.Errorf("move without reason or to its own host: %+v", m)
		}
		if m.Reason == "overload" && m.From != "h1" {
			t.Errorf("overload move from %s, want h1: %+v", m.From, m)
		}
		if m.Reason == "underload" && m.From != "h3" && m.From != "h4" {
			t.Errorf("consolidation from %s: %+v", m.From, m)
		}
		t.Logf("%s %s %s→%s: %s", m.Reason, m.VM, m.From, m.To, m.Detail)
	}
	if reasons["overload"] == 0 || reasons["underload"] == 0 {
		t.Fatalf("want overload relief and consolidation, got %v (note %q)", reasons, p.Note)
	}
	if !strings.Contains(p.Note, "overloaded") || len(p.Hosts) != 4 {
		t.Errorf("note %q, hosts %d", p.Note, len(p.Hosts))
	}
	var after1 float64
	for _, h := range p.Hosts {
		if h.Name == "h1" {
			after1 = h.PlanPercent
		}
	}
	if after1 > 100 {
		t.Errorf("h1 still at %.0f%% after the plan", after1)
	}
	// Nothing moved: recommend mode only recommends.
	if g.vm("a1").Status.Host != "h1" || g.vm("c1").Status.Host != "h3" {
		t.Error("recommend mode moved a VM")
	}
	// The next round waits for the interval; then history grows.
	g.clock.Step(time.Minute)
	g.must(g.r.balanceRound)
	if got := g.plan(); !got.Time.Equal(p.Time) {
		t.Error("a round ran before the interval passed")
	}
	g.clock.Step(5 * time.Minute)
	g.must(g.r.balanceRound)
	if got := g.plan(); got.Samples != 2 {
		t.Errorf("samples = %d, want 2", got.Samples)
	}
}

func TestBalancerOffAndUnknownPolicy(t *testing.T) {
	s := recommend()
	s.Mode = model.BalanceOff
	g := newGreenEnv(t, s)
	g.addHost("h1", 4, 16*model.GiB, nil)
	g.must(g.r.balanceRound)
	if _, err := g.st.Get(context.Background(), store.BalancePlanKey); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("off mode stored a plan: %v", err)
	}
	s.Mode, s.Policy = model.BalanceRecommend, "nope"
	g.putSettings(s)
	if err := g.step(g.r.balanceRound); err == nil {
		t.Fatal("an unknown policy planned")
	}
}

func TestBalancerAutomaticStartsMigrations(t *testing.T) {
	s := recommend()
	s.Mode = model.BalanceAutomatic
	g := newGreenEnv(t, s)
	g.addHost("h1", 2, 16*model.GiB, nil)
	g.addHost("h2", 2, 16*model.GiB, nil)
	g.putVM("a1", "h1", 2, 150, nil)
	g.putVM("a2", "h1", 2, 150, nil)
	g.putVM("b1", "h2", 1, 5, nil)
	g.syncHostUsage()
	g.must(g.r.balanceRound)
	p := g.plan()
	if len(p.Moves) == 0 || p.Applied != len(p.Moves) || p.Error != "" {
		t.Fatalf("plan = %+v", p)
	}
	kvs, _, err := g.st.List(context.Background(), store.MigrationsPrefix)
	if err != nil || len(kvs) != p.Applied {
		t.Fatalf("migrations stored = %d (%v), want %d", len(kvs), err, p.Applied)
	}
	moved := g.vm(strings.TrimPrefix(p.Moves[0].VM, "p/"))
	if moved.Status.Migration == "" {
		t.Error("the VM is not marked as migrating")
	}
}

func powerSettings() model.BalanceSettings {
	s := model.DefaultBalanceSettings()
	s.Mode = model.BalanceOff
	s.Power = model.PowerSettings{Standby: true, MinHostsOn: 1, HeadroomPercent: 20, IdleSeconds: 60}
	return s
}

func TestPowerStandbyAndWakeOnPending(t *testing.T) {
	g := newGreenEnv(t, powerSettings())
	g.addHost("h1", 4, 16*model.GiB, nil)
	g.addHost("h2", 4, 16*model.GiB, nil)
	g.addHost("h3", 4, 16*model.GiB, map[string]string{model.LabelNoStandby: "true"})
	g.placeVM("a1", "h1", 2, 50)
	g.syncHostUsage()

	g.must(g.r.powerStep) // h2 is seen empty now
	if g.host("h2").State != model.HostReady {
		t.Fatal("standby before the idle time")
	}
	g.clock.Step(61 * time.Second)
	g.must(g.r.powerStep)
	h2 := g.host("h2")
	if h2.State != model.HostStandby || h2.Power == nil || h2.Power.Desired != model.HostPowerStandby {
		t.Fatalf("h2 = %s %+v, want standby", h2.State, h2.Power)
	}
	if g.host("h3").State != model.HostReady || g.host("h1").State != model.HostReady {
		t.Error("a labelled or busy host went to standby")
	}
	if len(g.power.off) != 1 || g.power.off[0] != "h2" || len(g.events(EventHostStandby)) != 1 {
		t.Fatalf("power off calls %v, events %d", g.power.off, len(g.events(EventHostStandby)))
	}
	// Standby hosts draw no placement: a VM that fits only on h2 waits...
	g.createVM("big", 15, model.GiB)
	g.createVM("big2", 15, model.GiB)
	g.must(g.r.schedule)
	if g.vm("big").Status.Host != "h3" || g.vm("big2").Status.Host != "" {
		t.Fatalf("big on %q, big2 on %q", g.vm("big").Status.Host, g.vm("big2").Status.Host)
	}
	// ... and wakes it.
	g.must(g.r.powerStep)
	h2 = g.host("h2")
	if h2.State != model.HostStandby || h2.Power == nil || h2.Power.Desired != model.HostPowerOn {
		t.Fatalf("h2 = %s %+v, want waking", h2.State, h2.Power)
	}
	if len(g.power.on) != 1 || len(g.events(EventHostWake)) != 1 {
		t.Fatalf("power on calls %v", g.power.on)
	}
	if !strings.Contains(h2.Power.Reason, "p/big2") {
		t.Errorf("wake reason %q", h2.Power.Reason)
	}
	// Not twice, and not ready before its agent reports.
	g.must(g.r.powerStep)
	if len(g.power.on) != 1 || g.host("h2").State != model.HostStandby {
		t.Fatal("woken twice or ready too early")
	}
	g.clock.Step(2 * time.Second)
	g.setHostUsage("h2", 0) // the agent's first heartbeat after waking
	g.must(g.r.powerStep)
	if g.host("h2").State != model.HostReady || g.host("h2").Power != nil {
		t.Fatalf("h2 = %s after its agent reported", g.host("h2").State)
	}
	g.must(g.r.schedule)
	if got := g.vm("big2").Status.Host; got != "h2" {
		t.Fatalf("big2 on %q after the wake, want h2", got)
	}
}

func TestPowerKeepsMinimumAndHeadroom(t *testing.T) {
	s := powerSettings()
	s.Power.MinHostsOn = 2
	g := newGreenEnv(t, s)
	for _, h := range []string{"h1", "h2", "h3"} {
		g.addHost(h, 4, 16*model.GiB, nil)
	}
	g.placeVM("a1", "h1", 4, 300) // h1 at 75 %
	g.syncHostUsage()
	g.must(g.r.powerStep)
	g.clock.Step(2 * time.Minute)
	g.must(g.r.powerStep)
	// h2 and h3 are empty; both may not go: 2 hosts must stay on, and
	// with h1 at 75 % a single host would break the 20 % headroom anyway.
	g.must(g.r.powerStep)
	standby := 0
	for _, h := range []string{"h2", "h3"} {
		if g.host(h).State == model.HostStandby {
			standby++
		}
	}
	if standby != 1 {
		t.Fatalf("%d hosts in standby, want 1", standby)
	}
	// Load rises past the headroom: a standby host wakes.
	other := "h2"
	if g.host(other).State == model.HostStandby {
		other = "h3"
	}
	g.setVMUsage("a1", 380)
	g.placeVM("a2", other, 4, 300) // (3.8+3.0)/8 CPUs = 85 % > 80 %
	g.syncHostUsage()
	g.must(g.r.powerStep)
	if len(g.power.on) != 1 {
		t.Fatalf("power on calls %v, want one for headroom", g.power.on)
	}
}

// TestPowerKeepsHostsServingBalancers: a host with no VM that serves a
// load balancer is not empty (putting it to standby would move the
// balancer and break its connections); the empty one goes.
func TestPowerKeepsHostsServingBalancers(t *testing.T) {
	g := newGreenEnv(t, powerSettings())
	for _, h := range []string{"h1", "h2", "h3"} {
		g.addHost(h, 4, 16*model.GiB, nil)
	}
	if _, err := g.repo.UpdateHost(context.Background(), "h2", func(h *model.Host) error { h.Balancers = 1; return nil }); err != nil {
		t.Fatal(err)
	}
	g.placeVM("a1", "h1", 1, 50)
	g.syncHostUsage()
	g.must(g.r.powerStep)
	for range 3 {
		g.clock.Step(61 * time.Second)
		g.must(g.r.powerStep)
	}
	if g.host("h3").State != model.HostStandby || g.host("h2").State != model.HostReady {
		t.Fatalf("h2 (a balancer, no VM) %s, h3 (empty) %s: want h2 ready, h3 standby", g.host("h2").State, g.host("h3").State)
	}
}

func TestPowerOffFailureRevertsToReady(t *testing.T) {
	g := newGreenEnv(t, powerSettings())
	g.addHost("h1", 4, 16*model.GiB, nil)
	g.addHost("h2", 4, 16*model.GiB, nil)
	g.placeVM("a1", "h1", 1, 10)
	g.syncHostUsage()
	g.must(g.r.powerStep)
	g.clock.Step(2 * time.Minute)
	g.power.failNext = errors.New("bmc unreachable")
	if err := g.step(g.r.powerStep); err == nil || !strings.Contains(err.Error(), "bmc unreachable") {
		t.Fatalf("err = %v", err)
	}
	if g.host("h2").State != model.HostReady {
		t.Fatalf("h2 = %s after a failed power-off", g.host("h2").State)
	}
}

func TestEnergyLedgerHandChecked(t *testing.T) {
	s := powerSettings()
	s.Power.Standby = false
	g := newGreenEnv(t, s)
	g.addHost("h1", 2, 16*model.GiB, map[string]string{model.LabelPowerModel: "ml110g5"})
	g.addHost("h2", 2, 16*model.GiB, map[string]string{model.LabelPowerStandby: "10"})
	g.placeVM("a1", "h1", 1, 60) // 60 % of one vCPU
	g.placeVM("a2", "h1", 1, 40)
	g.setHostUsage("h1", 50) // (60+40)/2 CPUs
	if _, err := g.repo.UpdateHost(context.Background(), "h2", func(h *model.Host) error {
		h.State = model.HostStandby
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	g.must(g.r.energyStep) // starts the ledger
	g.clock.Step(time.Hour)
	g.must(g.r.energyStep)
	// ML110 G5 at 50 %: 116 W for an hour = 0.116 kWh, split 60:40.
	// h2 in standby at 10 W: 0.010 kWh, unattributed.
	rec := g.ledger()
	check := func(what string, gotJ, wantKWh float64) {
		t.Helper()
		if math.Abs(gotJ/3.6e6-wantKWh) > 1e-9 {
			t.Errorf("%s = %.6f kWh, want %.6f", what, gotJ/3.6e6, wantKWh)
		}
	}
	// energyStep books at most maxEnergyGap per pass: an hour in one
	// pass counts 5 minutes.
	check("h1", rec.HostJ["h1"], 0.116/12)
	// Now in 5-minute passes for the rest of the hour.
	g.restart()
	g.must(g.r.energyStep)
	for range 12 {
		g.clock.Step(5 * time.Minute)
		g.must(g.r.energyStep)
	}
	rec = g.ledger()
	check("h1", rec.HostJ["h1"], 0.116/12+0.116)
	check("h2", rec.HostJ["h2"], 0.010/12+0.010)
	check("a1", rec.VMJ["p/a1"], 0.6*(0.116/12+0.116))
	check("a2", rec.VMJ["p/a2"], 0.4*(0.116/12+0.116))
	check("project p", rec.ProjectJ["p"], 0.116/12+0.116)
	check("total", rec.TotalJ, 0.126/12+0.126)
	if rec.Hosts["h1"].Watts != 116 || rec.Hosts["h2"].Watts != 10 {
		t.Errorf("watts now: %+v", rec.Hosts)
	}
}

// ledger reads the stored energy ledger as the API server does.
func (g *greenEnv) ledger() model.EnergyLedger {
	g.t.Helper()
	rec, err := g.repo.EnergyLedger(context.Background())
	if err != nil {
		g.t.Fatal(err)
	}
	return rec
}

func TestHostPowerModel(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels map[string]string
		cpus   int
		u      float64
		want   float64
		stby   float64
	}{
		{"builtin g4", map[string]string{model.LabelPowerModel: "ml110g4"}, 2, 0.5, 102, 0},
		{"builtin with standby", map[string]string{model.LabelPowerModel: "ml110g5", model.LabelPowerStandby: "7"}, 2, 1, 135, 7},
		{"linear labels", map[string]string{model.LabelPowerIdle: "100", model.LabelPowerMax: "300"}, 8, 0.25, 150, 5},
		{"default by CPUs", nil, 8, 0, 88, 5},
		{"default full", nil, 8, 1, 200, 5},
		{"bad labels fall back", map[string]string{model.LabelPowerIdle: "x"}, 8, 1, 200, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := HostPowerModel(&model.Host{Labels: tc.labels, Capacity: model.Resources{CPUs: tc.cpus}})
			if got := m.Power(tc.u); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("Power(%v) = %v, want %v", tc.u, got, tc.want)
			}
			if m.Standby() != tc.stby {
				t.Errorf("Standby = %v, want %v", m.Standby(), tc.stby)
			}
		})
	}
}

func TestExecPower(t *testing.T) {
	h := model.Host{Meta: model.Meta{Name: "h1"}, Labels: map[string]string{"vpool.io/bmc": "10.0.0.9"}}
	ctx := context.Background()
	ok := &ExecPower{On: "true {{.Name}} {{index .Labels \"vpool.io/bmc\"}}", Off: "true"}
	if err := ok.PowerOn(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := ok.PowerOff(ctx, h); err != nil {
		t.Fatal(err)
	}
	for name, e := range map[string]*ExecPower{
		"failing command": {On: "false"},
		"no command":      {},
		"bad template":    {On: "true {{.Nope}}"},
		"missing binary":  {On: "/nonexistent/ipmitool"},
	} {
		if err := e.PowerOn(ctx, h); !errors.Is(err, ErrPowerCommand) {
			t.Errorf("%s: err = %v, want ErrPowerCommand", name, err)
		}
	}
	byDriver := PowerByDriver{Drivers: map[string]HostPower{"qemu": &ExecPower{Off: "false"}}}
	if err := byDriver.PowerOff(ctx, model.Host{Driver: "sim"}); err != nil {
		t.Errorf("sim host through the agent: %v", err)
	}
	if err := byDriver.PowerOff(ctx, model.Host{Driver: "qemu"}); !errors.Is(err, ErrPowerCommand) {
		t.Errorf("qemu host: %v", err)
	}
}

package devenv_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// mcluster is an in-process cluster for migration tests: one server over a
// memstore (restartable on the same addresses) and sim agents over real
// mutual TLS on loopback, their sim hosts joined by one registry.
type mcluster struct {
	t         testing.TB
	closeOnce sync.Once
	st        store.Store
	dataDir   string
	dir       string
	srv       *devenv.Server
	stopSrv   context.CancelFunc
	srvDone   chan error
	c         *client.Client
	token     string
	hosts     map[string]*sim.Host
	labels    map[string]map[string]string
	agents    map[string]context.CancelFunc
	done      map[string]chan struct{}
	agentsMu  sync.Mutex
	agentAddr string
	// fencer is the server's HA fence command (nil: none).
	fencer controller.HostFencer
}

type mhost struct {
	name   string
	memory model.Bytes
	labels map[string]string
	pools  []model.StoragePoolRef
	cpus   int
}

func startMCluster(t *testing.T, migrateDelay time.Duration, hosts ...mhost) *mcluster {
	t.Helper()
	return startMClusterDelay(t, migrateDelay, hosts...)
}

// startMClusterTB is startMCluster for benchmarks (no migration delay).
func startMClusterTB(t testing.TB, hosts ...mhost) *mcluster {
	t.Helper()
	return startMClusterDelay(t, 0, hosts...)
}

func startMClusterDelay(t testing.TB, migrateDelay time.Duration, hosts ...mhost) *mcluster {
	t.Helper()
	return startMClusterWith(t, migrateDelay, nil, hosts...)
}

// startMClusterWith is startMClusterDelay whose server has a fence
// command: fencer is made with the cluster (nil: none).
func startMClusterWith(t testing.TB, migrateDelay time.Duration, fencer func(*mcluster) controller.HostFencer, hosts ...mhost) *mcluster {
	t.Helper()
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	cl := &mcluster{t: t, st: st, dataDir: t.TempDir(), dir: t.TempDir(), hosts: map[string]*sim.Host{},
		labels: map[string]map[string]string{}, agents: map[string]context.CancelFunc{}, done: map[string]chan struct{}{}}
	if fencer != nil {
		cl.fencer = fencer(cl)
	}
	cl.startServer("127.0.0.1:0")
	t.Cleanup(cl.close)
	tok, err := cl.srv.NewJoinToken(context.Background(), time.Hour, 64)
	if err != nil {
		t.Fatal(err)
	}
	cl.token = tok.Token
	reg := sim.NewRegistry()
	for _, h := range hosts {
		mem := h.memory
		if mem == 0 {
			mem = 16 * model.GiB
		}
		cpus := h.cpus
		if cpus == 0 {
			cpus = 8
		}
		cl.hosts[h.name] = sim.MustHost(sim.Config{Name: h.name, CPUs: cpus, Memory: mem, Registry: reg, MigrateDelay: migrateDelay, Pools: h.pools})
		cl.labels[h.name] = h.labels
		cl.startAgent(h.name)
	}
	cl.eventually("hosts ready", func() bool {
		hs, err := cl.c.ListHosts(context.Background())
		ready := 0
		for _, h := range hs {
			if h.State == model.HostReady {
				ready++
			}
		}
		return err == nil && ready == len(hosts)
	})
	return cl
}

// startServer runs a server on the cluster's store; agentListen is
// "127.0.0.1:0" the first time and the same address on a restart.
func (cl *mcluster) startServer(agentListen string) {
	cl.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cc := controllerTuning()
	cc.Fencer = cl.fencer
	srv, err := devenv.StartServer(ctx, devenv.ServerConfig{Store: cl.st, DataDir: cl.dataDir, Listen: "127.0.0.1:0", AgentListen: agentListen,
		Controller: cc})
	if err != nil {
		cancel()
		cl.t.Fatal(err)
	}
	cl.srv, cl.stopSrv, cl.srvDone = srv, cancel, make(chan error, 1)
	go func() { cl.srvDone <- srv.Run(ctx) }()
	cl.agentAddr = srv.AgentAddr()
	if cl.c, err = client.New(srv.URL(), srv.AdminToken(), client.WithPollInterval(20*time.Millisecond, 100*time.Millisecond)); err != nil {
		cl.t.Fatal(err)
	}
}

func controllerTuning() (c controller.Config) {
	c.ResyncInterval = time.Second
	c.LeaseTTL = 2 * time.Second
	return c
}

// close stops every agent and the server (once).
func (cl *mcluster) close() {
	cl.closeOnce.Do(func() {
		cl.agentsMu.Lock()
		names := make([]string, 0, len(cl.agents))
		for n := range cl.agents {
			names = append(names, n)
		}
		cl.agentsMu.Unlock()
		for _, n := range names {
			cl.stopAgent(n)
		}
		cl.stopServer()
	})
}

func (cl *mcluster) stopServer() {
	if cl.stopSrv == nil {
		return
	}
	cl.stopSrv()
	if err := <-cl.srvDone; err != nil {
		cl.t.Errorf("server Run: %v", err)
	}
	cl.stopSrv = nil
}

func (cl *mcluster) startAgent(name string) {
	cl.t.Helper()
	a, err := agent.New(agent.Config{
		ServerURL: "https://" + cl.agentAddr, JoinToken: cl.token, StateDir: filepath.Join(cl.dir, name), HostName: name,
		Labels: cl.labels[name], Driver: cl.hosts[name].Driver(), StatusInterval: 200 * time.Millisecond, PollWait: 2 * time.Second,
		StopTimeout: time.Second, HeartbeatInterval: 500 * time.Millisecond,
	})
	if err != nil {
		cl.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			cl.t.Errorf("agent %s: %v", name, err)
		}
	}()
	cl.agentsMu.Lock()
	cl.agents[name], cl.done[name] = cancel, done
	cl.agentsMu.Unlock()
}

// killAgent stops a host's agent and drops its liveness key, as the
// expiry of its lease would a few seconds later.
func (cl *mcluster) killAgent(name string) {
	cl.stopAgent(name)
	if _, _, err := cl.st.Txn(context.Background(), nil, []store.Op{store.Delete(store.AliveKey(name))}); err != nil {
		cl.t.Fatal(err)
	}
}

func (cl *mcluster) stopAgent(name string) {
	cl.agentsMu.Lock()
	cancel, done := cl.agents[name], cl.done[name]
	delete(cl.agents, name)
	cl.agentsMu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (cl *mcluster) eventually(what string, cond func() bool) {
	cl.t.Helper()
	cl.eventuallyFor(30*time.Second, what, cond)
}

func (cl *mcluster) eventuallyFor(d time.Duration, what string, cond func() bool) {
	cl.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			cl.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runningOn lists the sim hosts whose driver lists the VM as running.
func (cl *mcluster) runningOn(name string) []string {
	var out []string
	for h, sh := range cl.hosts {
		infos, _ := sh.Driver().List(context.Background())
		for _, in := range infos {
			if in.ID == api.DefaultProject+"."+name && in.State == hypervisor.StateRunning {
				out = append(out, h)
			}
		}
	}
	return out
}

func (cl *mcluster) listedOn(host, name string) bool {
	infos, _ := cl.hosts[host].Driver().List(context.Background())
	for _, in := range infos {
		if in.ID == api.DefaultProject+"."+name {
			return true
		}
	}
	return false
}

func (cl *mcluster) createVM(name string, spec model.VMSpec, phase model.Phase) *model.VM {
	cl.t.Helper()
	ctx := context.Background()
	if _, err := cl.c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: name, Spec: spec}); err != nil {
		cl.t.Fatalf("create %s: %v", name, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	vm, err := cl.c.WaitVM(wctx, api.DefaultProject, name, client.InPhase(phase), nil)
	if err != nil {
		cl.t.Fatalf("waiting for %s to be %s: %v", name, phase, err)
	}
	return vm
}

func (cl *mcluster) vm(name string) *model.VM {
	cl.t.Helper()
	vm, err := cl.c.GetVM(context.Background(), api.DefaultProject, name)
	if err != nil {
		cl.t.Fatal(err)
	}
	return vm
}

func (cl *mcluster) migrate(name, to string) *model.Migration {
	cl.t.Helper()
	m, err := cl.c.MigrateVM(context.Background(), api.DefaultProject, api.MigrationRequest{VM: name, To: to})
	if err != nil {
		cl.t.Fatalf("migrate %s to %q: %v", name, to, err)
	}
	return m
}

func (cl *mcluster) waitMigration(id string, ok func(*model.Migration) bool, what string) *model.Migration {
	cl.t.Helper()
	var last *model.Migration
	cl.eventually("migration "+id+" "+what, func() bool {
		m, err := cl.c.GetMigration(context.Background(), id)
		if err != nil {
			return false
		}
		last = m
		return ok(m)
	})
	return last
}

func final(m *model.Migration) bool { return m.Phase.Final() }

func (cl *mcluster) allocHas(host, key string) bool {
	cl.t.Helper()
	kv, err := cl.st.Get(context.Background(), store.AllocKey(host))
	if err != nil {
		return false
	}
	return strings.Contains(string(kv.Value), `"`+key+`":true`)
}

// watchCopies fails the test if a VM ever runs on two hosts at once.
func (cl *mcluster) watchCopies(name string) (stop func()) {
	var done atomic.Bool
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for !done.Load() {
			if on := cl.runningOn(name); len(on) > 1 {
				cl.t.Errorf("VM %s runs on %v at once", name, on)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return func() { done.Store(true); <-finished }
}

var smallVM = model.VMSpec{VCPUs: 1, Memory: 512 * model.MiB, Disks: []model.Disk{{Name: "root", Size: model.GiB}}}

// homeHost is h1 with a label that createOnHome's VMs prefer. A preferred
// label, unlike cordoning the other hosts around the create, cannot race
// the scheduler's view of the cordon, and does not stop a migration away.
var homeHost = mhost{name: "h1", labels: map[string]string{"home": "yes"}}

// createOnHome creates a running smallVM that lands on homeHost.
func (cl *mcluster) createOnHome(name string) {
	cl.t.Helper()
	spec := smallVM
	spec.Placement.PreferredLabels = map[string]string{"home": "yes"}
	// The hosts list comes from the API's view; the scheduler's view may
	// not have the home host ready yet (CI, once: placed on h2). Wait
	// until a dry run would choose it.
	// The dry run answers from the API's view and the placement from the
	// controllers' (CI, once more: the dry run said h1, the VM went to
	// h2): a VM placed elsewhere is deleted and created again, a few
	// times. What the callers test starts with the VM at home.
	for try := 1; ; try++ {
		cl.eventually("the scheduler sees the home host", func() bool {
			res, err := cl.c.DryRunVM(context.Background(), api.DefaultProject, api.VMCreateRequest{Name: name, Spec: spec})
			return err == nil && res.Host == homeHost.name
		})
		vm := cl.createVM(name, spec, model.PhaseRunning)
		if vm.Status.Host == homeHost.name {
			return
		}
		if try == 5 {
			cl.t.Fatalf("%s was placed on %q, want %s (%d tries)", name, vm.Status.Host, homeHost.name, try)
		}
		cl.t.Logf("%s was placed on %q, not %s: created again", name, vm.Status.Host, homeHost.name)
		if err := cl.c.DeleteVM(context.Background(), api.DefaultProject, name); err != nil {
			cl.t.Fatal(err)
		}
		cl.eventually(name+" deleted", func() bool {
			_, err := cl.c.GetVM(context.Background(), api.DefaultProject, name)
			return client.IsNotFound(err)
		})
	}
}

func TestLiveMigration(t *testing.T) {
	cl := startMCluster(t, 200*time.Millisecond, mhost{name: "h1"}, mhost{name: "h2"}, mhost{name: "h3"})
	ctx := context.Background()
	var mu sync.Mutex
	kinds := map[string]bool{}
	ectx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	evc, _ := cl.c.FollowEvents(ectx, 0, "")
	go func() {
		for e := range evc {
			mu.Lock()
			kinds[e.Kind] = true
			mu.Unlock()
		}
	}()
	vm := cl.createVM("a", smallVM, model.PhaseRunning)
	stop := cl.watchCopies("a")
	defer stop()
	src := vm.Status.Host
	to := "h1"
	if src == "h1" {
		to = "h2"
	}

	// With --to.
	m := cl.migrate("a", to)
	if m.Mode != model.MigrationLive || m.Target != to || m.Source != src || m.Options.DowntimeLimitMs != model.DefaultDowntimeLimitMs {
		t.Fatalf("migration %+v", m)
	}
	m = cl.waitMigration(m.Name, final, "ends")
	if m.Phase != model.MigrationCompleted {
		t.Fatalf("migration %s: %s (%s)", m.Name, m.Phase, m.Reason)
	}
	if m.Result == nil || m.Result.BytesSent != int64(smallVM.Memory) || m.Result.DowntimeMs <= 0 || m.Progress.BytesTotal != int64(smallVM.Memory) {
		t.Errorf("result %+v, progress %+v", m.Result, m.Progress)
	}
	got := cl.vm("a")
	if got.Status.Host != to || got.Status.Migration != "" || got.Status.Phase != model.PhaseRunning {
		t.Fatalf("after the migration the VM is %+v", got.Status)
	}
	if on := cl.runningOn("a"); len(on) != 1 || on[0] != to {
		t.Fatalf("VM runs on %v, want [%s]", on, to)
	}
	if cl.allocHas(src, "default/a") || !cl.allocHas(to, "default/a") {
		t.Errorf("allocations not moved: %s has it %v, %s has it %v", src, cl.allocHas(src, "default/a"), to, cl.allocHas(to, "default/a"))
	}

	// Without --to: the scheduler picks another host.
	m = cl.migrate("a", "")
	if m.Target == to || m.Target == "" {
		t.Fatalf("scheduler picked %q from %s", m.Target, to)
	}
	m = cl.waitMigration(m.Name, final, "ends")
	if m.Phase != model.MigrationCompleted || cl.vm("a").Status.Host != m.Target {
		t.Fatalf("second migration %s: %s (%s)", m.Name, m.Phase, m.Reason)
	}
	// The source confirms it holds no copy.
	cl.waitMigration(m.Name, func(m *model.Migration) bool { return m.SourceCleaned }, "source cleaned")

	cl.eventually("phase events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range []string{"migration.pending", "migration.preparing-target", "migration.transferring",
			"migration.switching-over", "migration.completed", "vm.moved"} {
			if !kinds[k] {
				return false
			}
		}
		return true
	})
}

func TestMigrationRefusals(t *testing.T) {
	cl := startMCluster(t, 0, mhost{name: "h1", labels: map[string]string{"zone": "a"}}, mhost{name: "h2"},
		mhost{name: "h3", memory: model.GiB}, mhost{name: "h4", labels: map[string]string{"zone": "a"}})
	ctx := context.Background()
	// Keep the VMs on h1: the others are cordoned while they are placed.
	for _, h := range []string{"h2", "h3", "h4"} {
		cordon(t, cl, h, true)
	}
	big := smallVM
	big.Memory = 2 * model.GiB
	cl.createVM("big", big, model.PhaseRunning)
	zoned := smallVM
	zoned.Placement.RequiredLabels = map[string]string{"zone": "a"}
	cl.createVM("zoned", zoned, model.PhaseRunning)
	for _, h := range []string{"h2", "h3"} {
		cordon(t, cl, h, false)
	}
	cases := []struct {
		name, vm, to, want string
		code               string
	}{
		{"no capacity", "big", "h3", "insufficient memory", api.CodeConflict},
		{"required label", "zoned", "h2", "missing required labels zone=a", api.CodeConflict},
		{"target not ready", "zoned", "h4", "not ready", api.CodeConflict},
		{"target is the source", "big", "h1", "already on h1", api.CodeConflict},
		{"unknown host", "big", "h9", "not found", api.CodeConflict},
		{"unknown VM", "nope", "h2", "not found", api.CodeNotFound},
		{"no host fits the label", "zoned", "", "missing required labels zone=a", api.CodeConflict},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cl.c.MigrateVM(ctx, api.DefaultProject, api.MigrationRequest{VM: tc.vm, To: tc.to})
			if !client.HasCode(err, tc.code) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %s containing %q", err, tc.code, tc.want)
			}
		})
	}
	ms, err := cl.c.ListMigrations(ctx, "", true)
	if err != nil || len(ms) != 0 {
		t.Fatalf("refusals stored migrations: %v %v", ms, err)
	}
	for _, n := range []string{"big", "zoned"} {
		if vm := cl.vm(n); vm.Status.Host != "h1" || vm.Status.Migration != "" {
			t.Errorf("%s touched by a refused migration: %+v", n, vm.Status)
		}
	}
}

func cordon(t *testing.T, cl *mcluster, host string, on bool) {
	t.Helper()
	if _, err := cl.c.PatchHost(context.Background(), host, api.HostPatchRequest{Cordoned: &on}); err != nil {
		t.Fatal(err)
	}
}

func TestDrain(t *testing.T) {
	cl := startMCluster(t, 300*time.Millisecond, mhost{name: "h1", labels: map[string]string{"only": "here"}}, mhost{name: "h2"}, mhost{name: "h3"})
	ctx := context.Background()
	cordon(t, cl, "h2", true)
	cordon(t, cl, "h3", true)
	for _, n := range []string{"v1", "v2", "v3", "v4"} {
		cl.createVM(n, smallVM, model.PhaseRunning)
	}
	stuck := smallVM
	stuck.Placement.RequiredLabels = map[string]string{"only": "here"}
	cl.createVM("stuck", stuck, model.PhaseRunning)
	cold := smallVM
	cold.Power = model.PowerStopped
	cl.createVM("cold", cold, model.PhaseStopped)
	cordon(t, cl, "h2", false)
	cordon(t, cl, "h3", false)

	var maxRunning atomic.Int32
	var stopWatch atomic.Bool
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for !stopWatch.Load() {
			ms, err := cl.c.ListMigrations(ctx, "", true)
			if err == nil {
				n := int32(0)
				for _, m := range ms {
					if !m.Phase.Final() {
						n++
					}
				}
				if n > maxRunning.Load() {
					maxRunning.Store(n)
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	res, err := cl.c.DrainHost(ctx, "h1", 2)
	if err != nil {
		t.Fatal(err)
	}
	if res.Host.State != model.HostMaintenance || len(res.Movable) != 5 || len(res.Blocked) != 1 ||
		res.Blocked[0].VM != "default/stuck" || !strings.Contains(res.Blocked[0].Reason, "only=here") {
		t.Fatalf("drain answer: state %s, movable %+v, blocked %+v", res.Host.State, res.Movable, res.Blocked)
	}
	cl.eventually("h1 drained of all but stuck", func() bool {
		vms, err := cl.c.ListVMs(ctx, client.ListVMsOptions{AllProjects: true})
		if err != nil {
			return false
		}
		for _, vm := range vms.Items {
			if (vm.Status.Host == "h1") != (vm.Name == "stuck") || vm.Status.Migration != "" {
				return false
			}
		}
		return true
	})
	stopWatch.Store(true)
	<-watched
	if n := maxRunning.Load(); n > 2 || n == 0 {
		t.Errorf("saw %d migrations at once, cap 2", n)
	}
	ms, _ := cl.c.ListMigrations(ctx, "", true)
	modes := map[string]model.MigrationMode{}
	for _, m := range ms {
		if m.Phase != model.MigrationCompleted || m.Drain != "h1" {
			t.Errorf("migration %s of %s: %s, drain %q (%s)", m.Name, m.VM, m.Phase, m.Drain, m.Reason)
		}
		modes[m.VM] = m.Mode
	}
	if modes["cold"] != model.MigrationCold || modes["v1"] != model.MigrationLive || len(modes) != 5 {
		t.Errorf("modes %v", modes)
	}
	coldVM := cl.vm("cold")
	cl.eventually("the cold VM exists on its new host only", func() bool {
		return cl.listedOn(coldVM.Status.Host, "cold") && !cl.listedOn("h1", "cold")
	})
	if got := cl.vm("cold"); got.Status.Phase != model.PhaseStopped {
		t.Errorf("cold VM is %s after its move", got.Status.Phase)
	}
	for _, n := range []string{"v1", "v2", "v3", "v4"} {
		if on := cl.runningOn(n); len(on) != 1 || on[0] == "h1" {
			t.Errorf("%s runs on %v", n, on)
		}
	}
	h, _ := cl.c.GetHost(ctx, "h1")
	if h.Drain == nil || len(h.Drain.Blocked) != 1 || h.Drain.Blocked[0].VM != "default/stuck" || h.Drain.Done {
		t.Errorf("host drain status %+v", h.Drain)
	}
	h, err = cl.c.UndrainHost(ctx, "h1")
	if err != nil || h.State != model.HostReady || h.Drain != nil {
		t.Fatalf("undrain: %+v %v", h, err)
	}
}

// transferring starts a migration of a VM from h1 to h2 and waits until
// memory moves.
func transferring(t *testing.T, cl *mcluster, name string) *model.Migration {
	t.Helper()
	cl.createVM(name, smallVM, model.PhaseRunning)
	if h := cl.vm(name).Status.Host; h != "h1" {
		t.Fatalf("%s placed on %s, want h1", name, h)
	}
	m := cl.migrate(name, "h2")
	return cl.waitMigration(m.Name, func(m *model.Migration) bool {
		return m.Phase == model.MigrationTransferring && m.Progress.BytesSent > 0
	}, "transferring")
}

// assertStayed checks that a failed migration left the VM running on h1
// only, assigned there and unmarked, and nothing on h2.
func assertStayed(t *testing.T, cl *mcluster, name string, m *model.Migration) {
	t.Helper()
	vm := cl.vm(name)
	if vm.Status.Host != "h1" || vm.Status.Migration != "" {
		t.Errorf("VM after failed migration: %+v", vm.Status)
	}
	if on := cl.runningOn(name); len(on) != 1 || on[0] != "h1" {
		t.Errorf("VM runs on %v, want [h1]", on)
	}
	cl.waitMigration(m.Name, func(m *model.Migration) bool { return m.TargetCleaned }, "target cleaned")
	if a := cl.hosts["h2"].Allocated(); a != (model.Resources{}) {
		t.Errorf("h2 still holds %+v after cleanup", a)
	}
	if cl.allocHas("h2", "default/"+name) {
		t.Errorf("h2's allocation still holds the VM")
	}
}

func TestMigrationFailures(t *testing.T) {
	cases := []struct {
		name  string
		fault func(cl *mcluster, m *model.Migration)
		phase model.MigrationPhase
		want  string
		after func(cl *mcluster)
	}{
		{"target agent dies", func(cl *mcluster, m *model.Migration) { cl.killAgent("h2") },
			model.MigrationFailed, "target host h2 went down", func(cl *mcluster) { cl.startAgent("h2") }},
		{"target process dies", func(cl *mcluster, m *model.Migration) {
			_ = cl.hosts["h2"].Driver().Delete(context.Background(), m.Project+"."+m.VM)
		}, model.MigrationFailed, "went away", nil},
		{"source agent dies", func(cl *mcluster, m *model.Migration) { cl.killAgent("h1") },
			model.MigrationFailed, "source host h1 went down", func(cl *mcluster) { cl.startAgent("h1") }},
		{"cancel", func(cl *mcluster, m *model.Migration) {
			if _, err := cl.c.CancelMigration(context.Background(), m.Name); err != nil {
				cl.t.Error(err)
			}
		}, model.MigrationCancelled, "cancelled", nil},
	}
	for _, tc := range cases {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			cl := startMCluster(t, 4*time.Second, homeHost, mhost{name: "h2"})
			name := "f"
			cl.createOnHome(name)
			stop := cl.watchCopies(name)
			defer stop()
			m := cl.migrate(name, "h2")
			m = cl.waitMigration(m.Name, func(m *model.Migration) bool {
				return m.Phase == model.MigrationTransferring && m.Progress.BytesSent > 0
			}, "transferring")
			tc.fault(cl, m)
			m = cl.waitMigration(m.Name, final, "ends")
			if m.Phase != tc.phase || !strings.Contains(m.Reason, tc.want) {
				t.Fatalf("migration ended %s (%s), want %s with %q", m.Phase, m.Reason, tc.phase, tc.want)
			}
			// Checked before the source agent returns: its next status
			// report replaces the message.
			if tc.name == "source agent dies" {
				if vm := cl.vm(name); !strings.Contains(vm.Status.Message, "source host h1 went down") {
					t.Errorf("VM status does not say what happened: %q", vm.Status.Message)
				}
			}
			if tc.after != nil {
				tc.after(cl)
			}
			assertStayed(t, cl, name, m)
		})
	}
}

func TestMigrationSurvivesServerRestart(t *testing.T) {
	cl := startMCluster(t, 3*time.Second, homeHost, mhost{name: "h2"})
	cl.createOnHome("r")
	stop := cl.watchCopies("r")
	defer stop()
	m := cl.migrate("r", "h2")
	cl.waitMigration(m.Name, func(m *model.Migration) bool { return m.Phase == model.MigrationTransferring }, "transferring")
	addr := cl.agentAddr
	cl.stopServer()
	time.Sleep(500 * time.Millisecond)
	cl.startServer(addr)
	m = cl.waitMigration(m.Name, final, "ends after the restart")
	switch m.Phase {
	case model.MigrationCompleted:
		if on := cl.runningOn("r"); len(on) != 1 || on[0] != "h2" || cl.vm("r").Status.Host != "h2" {
			t.Fatalf("completed, but the VM runs on %v and is assigned to %s", on, cl.vm("r").Status.Host)
		}
	case model.MigrationFailed:
		assertStayed(t, cl, "r", m)
	default:
		t.Fatalf("migration %s after restart (%s)", m.Phase, m.Reason)
	}
	t.Logf("after the restart the migration %s (%s)", m.Phase, m.Reason)
}

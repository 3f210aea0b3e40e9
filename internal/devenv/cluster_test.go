package devenv_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
)

// cluster is a server and sim agents in this process, over real mutual
// TLS on loopback.
type cluster struct {
	t      testing.TB
	srv    *devenv.Server
	c      *client.Client
	token  string
	dir    string
	hosts  map[string]*sim.Host
	agents map[string]context.CancelFunc
	done   map[string]chan struct{}
	// fetchImages makes agents started from now on fetch image files
	// into StateDir/images, as a QEMU host does.
	fetchImages bool
	// net gives a host's agent its network side (network_test.go); nil: none.
	net func(host string) *agent.NetConfig
	// driver wraps a host's sim driver (scaling_bench_test.go); nil: as is.
	driver func(host string, d *sim.Driver) hypervisor.Driver
	// log is the agents' logger: the server's (nil: none).
	log *slog.Logger
}

// clusterOpts are the optional parts of an in-process cluster.
type clusterOpts struct {
	net    func(host string) *agent.NetConfig
	driver func(host string, d *sim.Driver) hypervisor.Driver
	// usage is the sim hosts' CPU use of a VM (sim.Config.Usage).
	usage func(id string, at time.Time) float64
}

func startCluster(t *testing.T, cfg devenv.ServerConfig, n int) *cluster {
	t.Helper()
	return startClusterNet(t, cfg, n, nil)
}

// startClusterNet is startCluster with hosts that serve vpool networks
// through net (network_test.go).
func startClusterNet(t testing.TB, cfg devenv.ServerConfig, n int, net func(host string) *agent.NetConfig) *cluster {
	t.Helper()
	return startClusterOpts(t, cfg, n, clusterOpts{net: net})
}

// startClusterOpts is startCluster with the options o.
func startClusterOpts(t testing.TB, cfg devenv.ServerConfig, n int, o clusterOpts) *cluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg.Listen, cfg.AgentListen = "127.0.0.1:0", "127.0.0.1:0"
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	srv, err := devenv.StartServer(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()
	cl := &cluster{t: t, srv: srv, dir: t.TempDir(), hosts: map[string]*sim.Host{},
		agents: map[string]context.CancelFunc{}, done: map[string]chan struct{}{}, net: o.net, driver: o.driver, log: cfg.Logger}
	t.Cleanup(func() {
		for name := range cl.agents {
			cl.stopAgent(name)
		}
		cancel()
		if err := <-srvDone; err != nil {
			t.Errorf("server Run: %v", err)
		}
	})
	cl.c, err = client.New(srv.URL(), srv.AdminToken(), client.WithPollInterval(20*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := srv.NewJoinToken(ctx, time.Hour, 64) // restarts rejoin nothing; new hosts use it
	if err != nil {
		t.Fatal(err)
	}
	cl.token = tok.Token
	reg := sim.NewRegistry()
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("h%d", i)
		cl.hosts[name] = sim.MustHost(sim.Config{Name: name, CPUs: 8, Memory: 16 * model.GiB, Registry: reg, Usage: o.usage})
		cl.startAgent(name)
	}
	cl.eventually("hosts ready", func() bool {
		hs, err := cl.c.ListHosts(context.Background())
		ready := 0
		for _, h := range hs {
			if h.State == model.HostReady {
				ready++
			}
		}
		return err == nil && ready == n
	})
	return cl
}

// startAgent runs the agent of a host: a new agent process, as far as
// the host's VMs can tell (a new driver view over the same sim.Host).
func (cl *cluster) startAgent(name string) {
	cl.t.Helper()
	cache := ""
	if cl.fetchImages {
		cache = filepath.Join(cl.dir, name, "images")
	}
	var drv hypervisor.Driver = cl.hosts[name].Driver()
	if cl.driver != nil {
		drv = cl.driver(name, cl.hosts[name].Driver())
	}
	a, err := agent.New(agent.Config{
		ServerURL: cl.srv.AgentURL(), JoinToken: cl.token, StateDir: filepath.Join(cl.dir, name), HostName: name,
		Driver: drv, StatusInterval: 200 * time.Millisecond, PollWait: 5 * time.Second,
		StopTimeout: time.Second, ImageCache: cache, Net: cl.netConfig(name), Logger: cl.log,
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
	cl.agents[name], cl.done[name] = cancel, done
}

func (cl *cluster) netConfig(host string) *agent.NetConfig {
	if cl.net == nil {
		return nil
	}
	return cl.net(host)
}

func (cl *cluster) stopAgent(name string) {
	cl.agents[name]()
	<-cl.done[name]
	delete(cl.agents, name)
}

func (cl *cluster) eventually(what string, cond func() bool) {
	cl.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			cl.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// driverInfo finds a VM on its sim host.
func (cl *cluster) driverInfo(host, project, name string) (hypervisor.Info, bool) {
	h := cl.hosts[host]
	if h == nil {
		return hypervisor.Info{}, false
	}
	infos, _ := h.Driver().List(context.Background())
	for _, in := range infos {
		if in.ID == project+"."+name {
			return in, true
		}
	}
	return hypervisor.Info{}, false
}

func (cl *cluster) waitPhase(name string, phase model.Phase) *model.VM {
	cl.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vm, err := cl.c.WaitVM(ctx, api.DefaultProject, name, client.InPhase(phase), nil)
	if err != nil {
		v, _ := cl.c.GetVM(context.Background(), api.DefaultProject, name)
		cl.t.Fatalf("waiting for %s to be %s: %v (last %+v)", name, phase, err, v)
	}
	return vm
}

func TestInProcessCluster(t *testing.T) {
	stores := []struct {
		name string
		cfg  func(t *testing.T) devenv.ServerConfig
	}{
		{"memstore", func(t *testing.T) devenv.ServerConfig {
			st := memstore.New()
			t.Cleanup(func() { st.Close() })
			return devenv.ServerConfig{Store: st}
		}},
		{"etcd", func(t *testing.T) devenv.ServerConfig {
			if testing.Short() {
				t.Skip("embedded etcd in -short mode")
			}
			return devenv.ServerConfig{EtcdUnsafeNoFsync: true}
		}},
	}
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) { testCluster(t, startCluster(t, s.cfg(t), 3)) })
	}
}

func testCluster(t *testing.T, cl *cluster) {
	ctx := context.Background()
	var mu sync.Mutex
	var events []model.Event
	ectx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	evc, _ := cl.c.FollowEvents(ectx, 0, "")
	go func() {
		for e := range evc {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		}
	}()

	// Create: every VM runs on the host its status names.
	names := []string{"a", "b", "c", "d", "e", "f"}
	for _, n := range names {
		_, err := cl.c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: n, Spec: model.VMSpec{
			VCPUs: 1, Memory: 512 * model.MiB, Disks: []model.Disk{{Name: "root", Size: model.GiB}}}})
		if err != nil {
			t.Fatalf("create %s: %v", n, err)
		}
	}
	hostOf := map[string]string{}
	for _, n := range names {
		vm := cl.waitPhase(n, model.PhaseRunning)
		in, ok := cl.driverInfo(vm.Status.Host, api.DefaultProject, n)
		if !ok || in.State != hypervisor.StateRunning {
			t.Fatalf("%s: status says running on %q, driver has %+v (%v)", n, vm.Status.Host, in, ok)
		}
		hostOf[n] = vm.Status.Host
	}

	// Stop, start, restart, delete converge.
	if _, err := cl.c.StopVM(ctx, api.DefaultProject, "a"); err != nil {
		t.Fatal(err)
	}
	cl.waitPhase("a", model.PhaseStopped)
	if in, _ := cl.driverInfo(hostOf["a"], api.DefaultProject, "a"); in.State != hypervisor.StateStopped {
		t.Fatalf("a stopped in the API but %s in the driver", in.State)
	}
	if _, err := cl.c.StartVM(ctx, api.DefaultProject, "a"); err != nil {
		t.Fatal(err)
	}
	cl.waitPhase("a", model.PhaseRunning)
	before, _ := cl.driverInfo(hostOf["b"], api.DefaultProject, "b")
	if _, err := cl.c.RestartVM(ctx, api.DefaultProject, "b"); err != nil {
		t.Fatal(err)
	}
	cl.eventually("b restarted", func() bool {
		in, _ := cl.driverInfo(hostOf["b"], api.DefaultProject, "b")
		return in.State == hypervisor.StateRunning && in.Pid != before.Pid
	})
	if err := cl.c.DeleteVM(ctx, api.DefaultProject, "c"); err != nil {
		t.Fatal(err)
	}
	cl.eventually("c deleted", func() bool {
		_, err := cl.c.GetVM(ctx, api.DefaultProject, "c")
		_, there := cl.driverInfo(hostOf["c"], api.DefaultProject, "c")
		return client.IsNotFound(err) && !there
	})

	// Kill the agent of d's host: its VMs keep running. Restart it on the
	// same state dir: it re-attaches without restarting them, and adopts
	// changes made while it was away.
	victim := hostOf["d"]
	var onVictim []string
	for _, n := range names {
		if hostOf[n] == victim && n != "c" {
			onVictim = append(onVictim, n)
		}
	}
	pids := map[string]int{}
	for _, n := range onVictim {
		in, _ := cl.driverInfo(victim, api.DefaultProject, n)
		pids[n] = in.Pid
	}
	cl.stopAgent(victim)
	for _, n := range onVictim {
		if in, _ := cl.driverInfo(victim, api.DefaultProject, n); in.State != hypervisor.StateRunning {
			t.Fatalf("%s is %s after its agent died", n, in.State)
		}
	}
	if _, err := cl.c.StopVM(ctx, api.DefaultProject, "d"); err != nil {
		t.Fatal(err)
	}
	cl.startAgent(victim)
	cl.waitPhase("d", model.PhaseStopped)
	for _, n := range onVictim {
		in, _ := cl.driverInfo(victim, api.DefaultProject, n)
		if n == "d" {
			continue
		}
		if in.State != hypervisor.StateRunning || in.Pid != pids[n] {
			t.Fatalf("%s was restarted by the agent restart: pid %d → %d, state %s", n, pids[n], in.Pid, in.State)
		}
		if vm := cl.waitPhase(n, model.PhaseRunning); vm.Status.Host != victim {
			t.Fatalf("%s moved to %s", n, vm.Status.Host)
		}
	}

	// The event stream saw the transitions.
	cl.eventually("events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		seen := map[string]bool{}
		for _, e := range events {
			seen[e.Kind+":"+e.To] = true
			seen[e.Kind] = true
		}
		return seen["vm.created"] && seen["vm.phase:running"] && seen["vm.phase:stopped"] && seen["vm.deleted"]
	})
}

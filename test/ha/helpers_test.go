package ha

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
	harness "github.com/vpool/vpool/test/internal/cluster"
)

// The shared harness (test/internal/cluster) runs the servers.
type (
	srv     = harness.Server
	cluster = harness.Cluster
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.RemoveBinary()
	os.Exit(code)
}

// startCluster starts n servers, the second and later joining the first
// with server join tokens.
func startCluster(tb testing.TB, n int) *cluster { return harness.Start(tb, n) }

// hosts are simulated hosts in this process, one registry so that VMs
// migrate between them, each with an agent that knows every server.
type hosts struct {
	names  []string
	sims   map[string]*sim.Host
	agents map[string]*agent.Agent
}

// checkNoSelfFence fails the test when a host's agent fenced itself (a
// healthy host killing its VMs: its renewals stalled for the fence
// timeout), and logs how close each came: its longest time between two
// renewals.
func (hs *hosts) checkNoSelfFence(tb testing.TB) {
	tb.Helper()
	for _, name := range hs.names {
		a := hs.agents[name]
		_, count := a.Fenced()
		tb.Logf("%s: longest time between renewals %s", name, a.LongestRenewalGap().Round(time.Millisecond))
		if count > 0 {
			tb.Errorf("%s's agent fenced itself %d times (longest time between renewals %s)", name, count, a.LongestRenewalGap().Round(time.Millisecond))
		}
	}
}

func startHosts(tb testing.TB, cl *cluster, n int, migrateDelay time.Duration) *hosts {
	tb.Helper()
	jt, err := cl.C.CreateJoinToken(context.Background(), api.JoinTokenRequest{Uses: n})
	if err != nil {
		tb.Fatal(err)
	}
	reg := sim.NewRegistry()
	hs := &hosts{sims: map[string]*sim.Host{}, agents: map[string]*agent.Agent{}}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("h%d", i)
		h := sim.MustHost(sim.Config{Name: name, CPUs: 32, Memory: 64 * model.GiB, Registry: reg, MigrateDelay: migrateDelay})
		a, err := agent.New(agent.Config{ServerURL: cl.AgentURLs(), JoinToken: jt.Token, StateDir: tb.TempDir(), HostName: name,
			Driver: h.Driver(), StatusInterval: 500 * time.Millisecond, PollWait: 5 * time.Second})
		if err != nil {
			tb.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = a.Run(ctx) }()
		tb.Cleanup(func() { cancel(); <-done })
		hs.names = append(hs.names, name)
		hs.sims[name] = h
		hs.agents[name] = a
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		list, err := cl.C.ListHosts(context.Background())
		ready := 0
		for _, h := range list {
			if h.State == model.HostReady {
				ready++
			}
		}
		if err == nil && ready == n {
			return hs
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d hosts ready after 60s (err %v)", ready, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// running counts, per VM name, the hosts that run it.
func (hs *hosts) running(tb testing.TB) map[string][]string {
	tb.Helper()
	out := map[string][]string{}
	for _, name := range hs.names {
		infos, err := hs.sims[name].Driver().List(context.Background())
		if err != nil {
			tb.Fatal(err)
		}
		for _, in := range infos {
			if in.State == "running" {
				out[in.Config.Name] = append(out[in.Config.Name], name)
			}
		}
	}
	return out
}

func eventually(tb testing.TB, what string, within time.Duration, cond func() bool) {
	tb.Helper()
	harness.Eventually(tb, what, within, cond)
}

func smallVM(name string) api.VMCreateRequest {
	return api.VMCreateRequest{Name: name, Spec: model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB,
		Disks: []model.Disk{{Name: "root", Size: model.GiB}}}}
}

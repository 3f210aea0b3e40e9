package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/test/internal/cluster"
)

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.RemoveBinary()
	os.Exit(code)
}

// settings are a run's dimensions, from the environment.
type settings struct {
	duration time.Duration // of the chaos
	seed     uint64
	agents   int
	maxLive  int
}

func readSettings(t *testing.T) settings {
	s := settings{duration: 30 * time.Second, seed: uint64(time.Now().UnixNano()), agents: 4, maxLive: 40}
	if d, err := time.ParseDuration(os.Getenv("VPOOL_CHAOS_DURATION")); err == nil && d > 0 {
		s.duration = d
	}
	if v, err := strconv.ParseUint(os.Getenv("VPOOL_CHAOS_SEED"), 10, 64); err == nil {
		s.seed = v
	}
	t.Logf("chaos for %s, seed %d (VPOOL_CHAOS_SEED=%d repeats the choices), load average %s", s.duration, s.seed, s.seed, loadAvg())
	return s
}

// chaosPolicy: HA timings short enough that a host killed for a few
// seconds is fenced and its VMs restart elsewhere during the run.
func chaosPolicy() *model.HAPolicy {
	return &model.HAPolicy{HeartbeatMillis: 1000, SuspectMillis: 3000, FenceMillis: 6000, MarginMillis: 1000}
}

// TestChaos runs the workload under random kill -9 of servers and agents
// for VPOOL_CHAOS_DURATION, lets the cluster settle and checks the
// invariants (invariants_test.go).
func TestChaos(t *testing.T) {
	s := readSettings(t)
	cl := cluster.Start(t, 3)
	ctx := context.Background()
	pol, err := cl.C.Policy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pol.HA = chaosPolicy()
	if _, err := cl.C.SetPolicy(ctx, *pol); err != nil {
		t.Fatal(err)
	}
	for _, p := range projects {
		if _, err := cl.C.CreateProject(ctx, api.ProjectCreateRequest{Name: p, Quota: model.Quota{VMs: 500, VCPUs: 500}}); err != nil {
			t.Fatal(err)
		}
	}
	pool := t.TempDir() // the shared pool every host "mounts"
	agents := cl.StartAgents(t, s.agents, cluster.AgentOptions{Pools: map[string]string{"shared": pool},
		SimCPUs: 8, SimMemory: "16GiB", MigrateDelay: time.Second})

	led := newLedger()
	w := &workload{c: cl.C, l: led, maxLive: s.maxLive}
	samp := &sampler{agents: agents}
	ch := &chaos{tb: t, cl: cl, agents: agents}

	runCtx, stop := context.WithTimeout(ctx, s.duration)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { w.run(runCtx, s.seed) })
	wg.Go(func() { samp.run(runCtx) })
	wg.Go(func() { ch.servers(runCtx, rand.New(rand.NewPCG(s.seed, 1))) })
	wg.Go(func() { ch.hosts(runCtx, rand.New(rand.NewPCG(s.seed, 2))) })
	wg.Wait()
	t.Logf("chaos over: %s; load average %s", ch.summary(), loadAvg())

	t.Cleanup(func() { keepLogs(t, cl.Root, s.seed) })
	inv := &invariants{t: t, cl: cl, agents: agents, led: led}
	inv.settle(90 * time.Second)
	samp.sample() // one more look at the hosts, settled
	inv.check()
	dups := samp.report(t)
	t.Logf("summary: %s; %s; %s; duplicates seen %d", ch.summary(), led.summary(), inv.migrationSummary(), dups)
}

// chaos kills -9 servers and agents at random and starts them again.
type chaos struct {
	tb     testing.TB
	cl     *cluster.Cluster
	agents []*cluster.Agent

	mu                       sync.Mutex
	serverKills, leaderKills int
	strikes                  [3]int // by kind: agent crash, host crash, freeze
	restartErr               int
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

// servers kills one server at a time — the leader about every other
// time — and starts it again after 0.5–6 s, waiting until it is healthy
// before the next kill: two of three always run, so the store keeps its
// quorum.
func (c *chaos) servers(ctx context.Context, r *rand.Rand) {
	for sleep(ctx, between(r, 2*time.Second, 6*time.Second)) {
		victim := c.cl.Servers[r.IntN(len(c.cl.Servers))]
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		leader, lerr := c.cl.Leader(lctx)
		cancel()
		if r.IntN(2) == 0 && lerr == nil {
			victim = leader
		}
		victim.Kill9()
		c.mu.Lock()
		c.serverKills++
		if lerr == nil && victim == leader {
			c.leaderKills++
		}
		c.mu.Unlock()
		time.Sleep(between(r, 500*time.Millisecond, 6*time.Second)) // even past the end: restart before settling
		if err := victim.Restart(2 * time.Minute); err != nil {
			c.mu.Lock()
			c.restartErr++
			c.mu.Unlock()
			c.tb.Errorf("server %s did not come back after kill -9: %v", victim.Name, err)
			victim.DumpLog(victim.Name)
			return
		}
	}
}

// hosts strikes one host at a time, in one of three ways:
//   - an agent crash: kill -9, back within 0.5–2.5 s (inside the fence
//     timeout); it finds its VMs as it left them, as QEMU outlives its
//     agent;
//   - a host crash: kill -9, and the host's VMs die with it (its driver
//     state is wiped); back after 1–20 s, often after it was fenced and
//     its VMs restarted elsewhere;
//   - a host freeze: SIGSTOP for 1–20 s, then SIGCONT — the hard case: the
//     host and its VMs resume where they were, possibly after their VMs
//     were restarted elsewhere, and its agent must fence itself before
//     they run on (the sampler watches for them).
func (c *chaos) hosts(ctx context.Context, r *rand.Rand) {
	for sleep(ctx, between(r, time.Second, 5*time.Second)) {
		a := c.agents[r.IntN(len(c.agents))]
		kind := r.IntN(3)
		c.mu.Lock()
		c.strikes[kind]++
		c.mu.Unlock()
		switch kind {
		case strikeAgent:
			a.Kill9()
			time.Sleep(between(r, 500*time.Millisecond, 2500*time.Millisecond))
			a.Start()
		case strikeHost:
			a.Kill9()
			if err := os.Remove(a.SimStateFile()); err != nil && !os.IsNotExist(err) {
				c.tb.Errorf("wiping %s: %v", a.Name, err)
			}
			time.Sleep(between(r, time.Second, 20*time.Second))
			a.Start()
		case strikeFreeze:
			a.Freeze()
			time.Sleep(between(r, time.Second, 20*time.Second))
			a.Thaw()
		}
	}
}

// The three ways hosts strikes.
const (
	strikeAgent = iota
	strikeHost
	strikeFreeze
)

func (c *chaos) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("kills: %d servers (%d leaders), %d agent crashes, %d host crashes, %d host freezes", c.serverKills, c.leaderKills,
		c.strikes[strikeAgent], c.strikes[strikeHost], c.strikes[strikeFreeze])
}

func (l *ledger) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("creates: %d acknowledged, %d cut off, %d refused; deletes: %d acknowledged, %d cut off; migrations: %d acknowledged, %d refused, %d cut off",
		len(l.acked), len(l.unsureCreate), len(l.refused), len(l.deleted), len(l.unsureDelete), len(l.migrations), l.migRefused, l.migUnsure)
}

// keepLogs copies the servers' and agents' logs of a failed run (of any
// run with VPOOL_CHAOS_KEEP_LOGS=1) out of the test's temporary
// directory, for the report.
func keepLogs(t *testing.T, root string, seed uint64) {
	if !t.Failed() && os.Getenv("VPOOL_CHAOS_KEEP_LOGS") == "" {
		return
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("vpool-chaos-%d", seed))
	logs, _ := filepath.Glob(filepath.Join(root, "*.log"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return
	}
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil {
			_ = os.WriteFile(filepath.Join(dir, filepath.Base(l)), b, 0o644)
		}
	}
	t.Logf("the processes' logs are kept in %s", dir)
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if len(b) > 14 {
		b = b[:14]
	}
	return string(b)
}

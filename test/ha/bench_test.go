package ha

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
)

// sample is one answer (or failure) of a server during a failover.
type sample struct {
	at time.Time
	ok bool
}

// pollAll asks one server for the cluster summary every 20 ms (1 s
// timeout) until ctx ends.
func pollAll(ctx context.Context, c *client.Client) []sample {
	var out []sample
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.ClusterInfo(rctx)
		cancel()
		if ctx.Err() != nil {
			break
		}
		out = append(out, sample{at: time.Now(), ok: err == nil})
		time.Sleep(20 * time.Millisecond)
	}
	return out
}

// availability is the longest time without a successful answer after
// from, and the share of requests answered.
func availability(from time.Time, ss []sample) (gap time.Duration, okShare float64) {
	last, ok := from, 0
	for _, s := range ss {
		if !s.ok {
			continue
		}
		ok++
		gap = max(gap, s.at.Sub(last))
		last = s.at
	}
	if len(ss) > 0 {
		okShare = float64(ok) / float64(len(ss))
	}
	return gap, okShare
}

// failoverRun is one leader kill: when a new leader held the leader key,
// when the controllers acted again (a VM created right after the kill
// was placed), and the survivors' availability meanwhile.
type failoverRun struct {
	leader, controllers time.Duration
	apiGap              time.Duration
	apiOK               float64
}

// killLeaderOnce kills the leader, creates a VM through the client of
// every server, and measures until the VM is placed.
func killLeaderOnce(tb testing.TB, cl *cluster, probe string) failoverRun {
	ctx := context.Background()
	old, err := cl.Leader(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		samples [][]sample
	)
	for _, s := range cl.Servers {
		if s == old {
			continue
		}
		wg.Go(func() {
			ss := pollAll(pctx, s.Client)
			mu.Lock()
			samples = append(samples, ss)
			mu.Unlock()
		})
	}
	time.Sleep(200 * time.Millisecond) // the pollers see the cluster whole first
	old.Kill9()
	t0 := time.Now()
	var run failoverRun
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := cl.C.CreateVM(cctx, api.DefaultProject, smallVM(probe))
		cancel()
		if err == nil || client.HasCode(err, api.CodeConflict) {
			break
		}
		if time.Since(t0) > time.Minute {
			tb.Fatalf("create after the kill: %v", err)
		}
	}
	for run.controllers == 0 || run.leader == 0 {
		if run.leader == 0 {
			if l, err := cl.Leader(ctx); err == nil && l != old {
				run.leader = time.Since(t0)
			}
		}
		if run.controllers == 0 {
			if vm, err := cl.C.GetVM(ctx, api.DefaultProject, probe); err == nil && vm.Status.Host != "" {
				run.controllers = time.Since(t0)
			}
		}
		if time.Since(t0) > time.Minute {
			tb.Fatalf("no leader or no placement a minute after the kill (%+v)", run)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	wg.Wait()
	run.apiOK = 1
	for _, ss := range samples {
		gap, share := availability(t0, ss)
		run.apiGap, run.apiOK = max(run.apiGap, gap), min(run.apiOK, share)
	}
	// Back to three servers before the next kill.
	old.Start()
	old.WaitHealthy()
	time.Sleep(2 * time.Second)
	return run
}

// BenchmarkLeaderFailover kills -9 the server that runs the controllers,
// once per iteration (run it with -benchtime=5x), and reports, over the
// runs, how long until another server held the leadership (leader-s),
// until the controllers acted again — a VM created right after the kill
// was placed (controllers-s, target ≤ 5 s) — and how the two other
// servers' API answered meanwhile: the longest time without an answer
// (api-gap-ms) and the share of requests answered (api-ok-%), each as
// min, median and max.
func BenchmarkLeaderFailover(b *testing.B) {
	cl := startCluster(b, 3)
	startHosts(b, cl, 1, 0)
	var runs []failoverRun
	for i := 0; i < b.N; i++ {
		r := killLeaderOnce(b, cl, fmt.Sprintf("probe-%d", i))
		b.Logf("run %d: leader after %s, controllers after %s, API gap %s, %.1f%% answered",
			i+1, r.leader.Round(time.Millisecond), r.controllers.Round(time.Millisecond), r.apiGap.Round(time.Millisecond), 100*r.apiOK)
		runs = append(runs, r)
	}
	report := func(unit string, f func(failoverRun) float64) {
		vs := make([]float64, len(runs))
		for i, r := range runs {
			vs[i] = f(r)
		}
		sort.Float64s(vs)
		b.ReportMetric(vs[0], unit+"-min")
		b.ReportMetric(vs[len(vs)/2], unit+"-median")
		b.ReportMetric(vs[len(vs)-1], unit+"-max")
	}
	report("leader-s", func(r failoverRun) float64 { return r.leader.Seconds() })
	report("controllers-s", func(r failoverRun) float64 { return r.controllers.Seconds() })
	report("api-gap-ms", func(r failoverRun) float64 { return float64(r.apiGap.Milliseconds()) })
	report("api-ok-%", func(r failoverRun) float64 { return 100 * r.apiOK })
}

package ha

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

// outcome is one create of the stream.
type outcome struct {
	name     string
	accepted bool
	at       time.Time
	err      error
}

// createStream creates n VMs from workers goroutines through c and calls
// kill once `killAfter` creates were acknowledged.
func createStream(c *client.Client, n, workers, killAfter int, kill func()) []outcome {
	var (
		mu    sync.Mutex
		out   []outcome
		acked int
		once  sync.Once
		next  atomic.Int64
		wg    sync.WaitGroup
	)
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i > n {
					return
				}
				name := fmt.Sprintf("vm-%03d", i)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := c.CreateVM(ctx, api.DefaultProject, smallVM(name))
				cancel()
				mu.Lock()
				out = append(out, outcome{name: name, accepted: err == nil, at: time.Now(), err: err})
				if err == nil {
					acked++
				}
				fire := acked == killAfter
				mu.Unlock()
				if fire {
					once.Do(kill)
				}
			}
		})
	}
	wg.Wait()
	return out
}

// poll asks one server for the cluster summary every 50 ms until ctx
// ends and counts the answers.
func poll(ctx context.Context, c *client.Client, ok, failed *atomic.Int64) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.ClusterInfo(rctx)
		cancel()
		if err == nil {
			ok.Add(1)
		} else if ctx.Err() == nil {
			failed.Add(1)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLeaderKillDuringCreates kills -9 the server that runs the
// controllers while creates stream in through a client that knows all
// three servers and while a drain migrates VMs. The other two servers
// keep answering, a new leader takes over, every acknowledged VM exists
// exactly once and runs on exactly one host, the VMs created around the
// kill are placed by the new leader, quota usage counts what exists, and
// the drain and its migrations finish: nothing is left stuck.
func TestLeaderKillDuringCreates(t *testing.T) {
	cl := startCluster(t, 3)
	hs := startHosts(t, cl, 3, 2*time.Second)
	ctx := context.Background()

	startDrain(t, cl, hs)

	leader, err := cl.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pctx, stopPolls := context.WithCancel(ctx)
	defer stopPolls()
	var killedAt time.Time
	counts := map[string]*[2]atomic.Int64{}
	kill := func() {
		leader.Kill9()
		killedAt = time.Now()
		for _, s := range cl.Servers {
			if s != leader {
				c := &[2]atomic.Int64{}
				counts[s.Name] = c
				go poll(pctx, s.Client, &c[0], &c[1])
			}
		}
	}
	const n = 80
	results := createStream(cl.C, n, 4, 20, kill)
	stopPolls()
	if killedAt.IsZero() {
		t.Fatal("the leader was never killed: too few creates were acknowledged")
	}

	accepted, afterKill := tally(t, results, killedAt, leader.Name)
	if afterKill == 0 {
		t.Error("no create was acknowledged after the kill: the API did not keep answering")
	}
	for name, c := range counts {
		t.Logf("server %s after the kill: %d answers, %d failures", name, c[0].Load(), c[1].Load())
		if c[0].Load() == 0 {
			t.Errorf("server %s did not answer after the leader was killed", name)
		}
	}

	eventually(t, "a new leader", 30*time.Second, func() bool {
		l, err := cl.Leader(ctx)
		return err == nil && l != leader
	})
	t.Logf("a new leader %s after the kill", time.Since(killedAt).Round(100*time.Millisecond))
	checkConverged(t, cl, hs, accepted, n)
	checkDrained(t, cl, "h1")
	hs.checkNoSelfFence(t)
	for _, s := range cl.Servers {
		if s != leader {
			checkAuditAfterFailover(t, s, leader.Name, killedAt)
			break
		}
	}
}

// tally sorts the creates' outcomes: acknowledged (and how many after
// the kill), refused (none may be), cut off by the kill.
func tally(t *testing.T, results []outcome, killedAt time.Time, killed string) (map[string]bool, int) {
	t.Helper()
	accepted := map[string]bool{}
	var afterKill, refused, unknown int
	for _, r := range results {
		var ae *api.Error
		switch {
		case r.accepted:
			accepted[r.name] = true
			if r.at.After(killedAt) {
				afterKill++
			}
		case errors.As(r.err, &ae) && ae.Code != api.CodeUnavailable && ae.Code != api.CodeInternal:
			refused++
			t.Errorf("create %s refused: %v", r.name, r.err)
		default:
			unknown++ // cut off by the kill: may or may not be stored
		}
	}
	t.Logf("creates: %d acknowledged (%d after the kill of %s), %d refused, %d cut off", len(accepted), afterKill, killed, refused, unknown)
	return accepted, afterKill
}

// startDrain runs four VMs on h1 (the other hosts cordoned meanwhile),
// drains h1 and returns once one of its migrations is under way.
func startDrain(t *testing.T, cl *cluster, hs *hosts) {
	t.Helper()
	ctx := context.Background()
	cordon := func(on bool) {
		for _, h := range []string{"h2", "h3"} {
			if _, err := cl.C.PatchHost(ctx, h, api.HostPatchRequest{Cordoned: &on}); err != nil {
				t.Fatal(err)
			}
		}
	}
	cordon(true)
	for i := 1; i <= 4; i++ {
		if _, err := cl.C.CreateVM(ctx, api.DefaultProject, smallVM(fmt.Sprintf("pre-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the VMs to drain running", 60*time.Second, func() bool { return len(hs.running(t)) == 4 })
	cordon(false)
	if _, err := cl.C.DrainHost(ctx, "h1", 2); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a drain migration in flight", 30*time.Second, func() bool {
		ms, err := cl.C.ListMigrations(ctx, "", true)
		for _, m := range ms {
			if !m.Phase.Final() && m.Phase != model.MigrationPending {
				return true
			}
		}
		_ = err
		return false
	})

}

// checkConverged waits until every stored VM runs, then checks that each
// runs on exactly one host, its own, that every acknowledged VM is
// stored, nothing else is, and the quota counts exactly what exists.
func checkConverged(t *testing.T, cl *cluster, hs *hosts, accepted map[string]bool, n int) {
	t.Helper()
	ctx := context.Background()
	var vms map[string]model.VM
	eventually(t, "every stored VM running", 90*time.Second, func() bool {
		list, err := cl.C.ListVMs(ctx, client.ListVMsOptions{Project: api.DefaultProject})
		if err != nil {
			return false
		}
		vms = map[string]model.VM{}
		for _, v := range list.Items {
			vms[v.Name] = v
			if v.Status.Phase != model.PhaseRunning || v.Status.Migration != "" {
				return false
			}
		}
		return true
	})
	for name := range accepted {
		if _, ok := vms[name]; !ok {
			t.Errorf("acknowledged VM %s is lost", name)
		}
	}
	var names []string
	for name := range vms {
		var i int
		if _, err := fmt.Sscanf(name, "vm-%03d", &i); (err != nil || i < 1 || i > n) && !isPre(name) {
			t.Errorf("unexpected VM %s", name)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	running := hs.running(t)
	for _, name := range names {
		where := running[name]
		if len(where) != 1 || where[0] != vms[name].Status.Host {
			t.Errorf("%s runs on %v, want exactly its host %s", name, where, vms[name].Status.Host)
		}
	}
	if len(running) != len(vms) {
		t.Errorf("%d VMs run on the hosts, %d are stored", len(running), len(vms))
	}
	p, err := cl.C.GetProject(ctx, api.DefaultProject)
	if err != nil {
		t.Fatal(err)
	}
	if p.Usage.VMs != len(vms) {
		t.Errorf("project usage counts %d VMs, %d exist", p.Usage.VMs, len(vms))
	}
	t.Logf("after the failover: %d VMs stored, each running on exactly one host", len(vms))
}

func isPre(name string) bool {
	var i int
	_, err := fmt.Sscanf(name, "pre-%d", &i)
	return err == nil
}

// checkDrained waits for the drain to finish and for every migration to
// end, and wants them all completed.
func checkDrained(t *testing.T, cl *cluster, host string) {
	t.Helper()
	ctx := context.Background()
	eventually(t, "the drain done", 90*time.Second, func() bool {
		h, err := cl.C.GetHost(ctx, host)
		return err == nil && h.Drain != nil && h.Drain.Done
	})
	ms, err := cl.C.ListMigrations(ctx, "", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Phase != model.MigrationCompleted {
			t.Errorf("migration %s of %s: %s (%s), want completed", m.Name, m.VM, m.Phase, m.Reason)
		}
	}
	t.Logf("drain of %s done: %d migrations completed across the failover", host, len(ms))
}

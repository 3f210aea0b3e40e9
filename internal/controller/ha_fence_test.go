package controller

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// scriptedFencer is a fence command whose answer the test sets; it counts
// its runs.
type scriptedFencer struct {
	n   atomic.Int32
	err error
}

func (f *scriptedFencer) Fence(context.Context, model.Host) error { f.n.Add(1); return f.err }

// earlyFenceEnv starts a leader with a fence command run at the suspect
// timeout (ha.fenceCommandMillis 4000), hosts h1 and h2 beating and v on
// h1; calmFor is how long both beat before the test goes on (the term
// must be calm for a fence timeout before any command runs).
func earlyFenceEnv(t *testing.T, f HostFencer, term func(context.Context) (uint64, error), calmFor time.Duration) *env {
	t.Helper()
	e := newEnv(t)
	e.addHost("h1", 4, 4*model.GiB, nil)
	e.addHost("h2", 4, 4*model.GiB, nil)
	pol := model.DefaultPolicy()
	pol.HA = &model.HAPolicy{FenceCommandMillis: 4000}
	e.setPolicy(pol)
	e.createVM("v", 1, model.GiB)
	cfg := e.config("a", nil)
	cfg.LeaseTTL, cfg.Fencer, cfg.StoreTerm = time.Minute, f, term
	m, _ := e.start(cfg)
	eventually(t, "leader", m.IsLeader)
	eventually(t, "v placed", func() bool { return e.vm("v").Status.Host == "h1" })
	e.stepBeating(calmFor, "h1", "h2")
	return e
}

// silence lets h1's lease expire (h2 beats on): the leader sees it gone
// at an age of the lease's TTL (5 s), past the suspect timeout (4 s) and
// before the fence timeout (6 s). The clock stays there.
func (e *env) silence() {
	e.t.Helper()
	e.stepBeating(time.Duration(e.hostTTL)*time.Second+500*time.Millisecond, "h2")
}

// With ha.fenceCommandMillis at the suspect timeout, the leader runs the
// fence command as soon as the host is suspect and, on its success,
// restarts the VMs at once: well before the fence timeout and margin
// (the clock stays under them). Before, the command ran only once the
// host failed (the fence timeout), and this test waited for ever.
func TestEarlyFenceCommandRestartsAtOnce(t *testing.T) {
	f := &scriptedFencer{}
	e := earlyFenceEnv(t, f, nil, 7*time.Second)
	start := e.clock.Now()
	e.silence()
	eventually(t, "h1 fenced by the command", func() bool { return e.host("h1").State == model.HostFenced })
	eventually(t, "v on h2", func() bool { return e.vm("v").Status.Host == "h2" })
	if silent, limit := e.clock.Now().Sub(start), model.DefaultHAPolicy().Fence(); silent >= limit {
		t.Fatalf("the test's clock moved %s, not under the fence timeout %s", silent, limit)
	}
	if n := f.n.Load(); n != 1 {
		t.Fatalf("fence command ran %d times, want 1", n)
	}
	want := []string{"host.suspect", "host.failed", "host.fenced"}
	if got := hostKinds(e, "h1"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("h1 events = %v, want %v", got, want)
	}
}

// A fence command that fails leaves the host to the self-fence timeline:
// no restart until the fence timeout and margin passed, then fenced by
// the timeout, the command's error kept in the failover record. It is
// not run again.
func TestFailedFenceCommandFallsBack(t *testing.T) {
	f := &scriptedFencer{err: errors.New("bmc unreachable")}
	e := earlyFenceEnv(t, f, nil, 7*time.Second)
	e.silence()
	eventually(t, "the command ran", func() bool { return f.n.Load() == 1 })
	time.Sleep(100 * time.Millisecond) // a few passes
	if s := e.host("h1").State; s != model.HostSuspect {
		t.Fatalf("h1 is %s after a failed fence command, want suspect", s)
	}
	if e.vm("v").Status.Host != "h1" {
		t.Fatal("v moved after a failed fence command")
	}
	p := model.DefaultHAPolicy()
	e.stepBeating(p.Fence()+p.Margin()-5*time.Second, "h2")
	eventually(t, "h1 fenced by the timeout", func() bool { return e.host("h1").State == model.HostFenced })
	eventually(t, "v on h2", func() bool { return e.vm("v").Status.Host == "h2" })
	eventually(t, "failover by timeout, with the command's error", func() bool {
		s, _, _ := e.repo.GetHAState(context.Background())
		return s != nil && len(s.Failovers) == 1 && s.Failovers[0].FenceBy == "timeout" &&
			strings.Contains(s.Failovers[0].FenceCommandError, "bmc unreachable")
	})
	if n := f.n.Load(); n != 1 {
		t.Fatalf("fence command ran %d times, want 1", n)
	}
}

// No fence command within a fence timeout of the term's start: a new
// leader's view of the renewals is young, they may have stalled in the
// hand-over.
func TestFenceCommandWaitsAfterTakingOffice(t *testing.T) {
	f := &scriptedFencer{}
	e := earlyFenceEnv(t, f, nil, 0)
	e.silence() // 5.5 s into the term: h1 suspect, the command due but for the grace
	eventually(t, "h1 suspect", func() bool { return e.host("h1").State == model.HostSuspect })
	time.Sleep(100 * time.Millisecond)
	if n := f.n.Load(); n != 0 {
		t.Fatalf("fence command ran %d times within a fence timeout of the term's start", n)
	}
	e.stepBeating(time.Second, "h2") // 6.5 s: calm
	eventually(t, "the command ran", func() bool { return f.n.Load() == 1 })
	eventually(t, "h1 fenced", func() bool { return e.host("h1").State == model.HostFenced })
}

// No fence command within a fence timeout of a change of the store's raft
// term (an election: every renewal waited for it), nor while the term
// cannot be read.
func TestFenceCommandWaitsAfterAStoreElection(t *testing.T) {
	for _, c := range []struct {
		name string
		fail bool
	}{{"new term", false}, {"term unknown", true}} {
		t.Run(c.name, func(t *testing.T) {
			var term atomic.Uint64
			var broken atomic.Bool
			term.Store(3)
			get := func(context.Context) (uint64, error) {
				if broken.Load() {
					return 0, errors.New("no leader")
				}
				return term.Load(), nil
			}
			f := &scriptedFencer{}
			e := earlyFenceEnv(t, f, get, 7*time.Second)
			if c.fail {
				broken.Store(true)
			} else {
				term.Store(4)
			}
			// h1 falls silent as the store elects (or cannot be asked);
			// its lease expires 5.5 s later, past the suspect timeout,
			// within a fence timeout of the election
			e.stepBeating(time.Second, "h2")
			broken.Store(false)
			e.stepBeating(time.Duration(e.hostTTL)*time.Second-500*time.Millisecond, "h2")
			eventually(t, "h1 suspect", func() bool { return e.host("h1").State == model.HostSuspect })
			time.Sleep(100 * time.Millisecond)
			if n := f.n.Load(); n != 0 {
				t.Fatalf("fence command ran %d times within a fence timeout of the store's election", n)
			}
			e.stepBeating(2*time.Second, "h2")
			eventually(t, "the command ran", func() bool { return f.n.Load() == 1 })
		})
	}
}

// The HA loop acts at a host's deadline by its timer, not at the next
// periodic pass: here the periodic pass is an hour away and nothing in
// the store changes once h1 is suspect, yet h1 is failed and fenced, and
// v restarted, once the clock passed the fence timeout and margin.
// Before, only the 100 ms tick (or a watch event) ran the loop.
func TestHALoopWakesAtTheDeadline(t *testing.T) {
	old := haTick
	haTick = time.Hour
	t.Cleanup(func() { haTick = old })
	e := newEnv(t)
	e.addHost("h1", 4, 4*model.GiB, nil)
	e.addHost("h2", 4, 4*model.GiB, nil)
	e.createVM("v", 1, model.GiB)
	cfg := e.config("a", nil)
	cfg.LeaseTTL, cfg.ResyncInterval = time.Hour, time.Hour
	m, _ := e.start(cfg)
	eventually(t, "leader", m.IsLeader)
	eventually(t, "v placed", func() bool { return e.vm("v").Status.Host == "h1" })
	e.stepBeating(7*time.Second, "h1", "h2") // the term's first stamps are old
	e.silence()                              // h1's key expires: a watch event
	eventually(t, "h1 suspect", func() bool { return e.host("h1").State == model.HostSuspect })
	time.Sleep(300 * time.Millisecond) // the passes the events caused are over
	p := model.DefaultHAPolicy()
	e.stepBeating(p.Fence()+p.Margin(), "h2") // keep-alives only: no event, no tick
	eventually(t, "h1 fenced by the timer's pass", func() bool { return e.host("h1").State == model.HostFenced })
	eventually(t, "v on h2", func() bool { return e.vm("v").Status.Host == "h2" })
}

package scale

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// failover is the account of a leader killed while placing: when, which
// server (and whether its member led the store's raft too), when a
// surviving server first named another leader, and, from the placement
// events, the gap until the first placement decided after the kill (by
// the new leader: the old one is dead) and until the placing rate
// recovered to half the rate before the kill.
type failover struct {
	mu         sync.Mutex
	at         time.Time // the SIGKILL
	killed     string
	raftLeader bool      // the killed server's member led raft
	leaderAt   time.Time // a survivor names another leader (zero: not seen)

	// from the placement events (failoverGap)
	before      float64       // placed/s over up to recoveryBase before the kill
	first       time.Duration // kill → first placement decided after it (<0: none)
	recovered   time.Duration // kill → the rate over recoveryWindow back to half of before (<0: not reached)
	afterPlaced int           // placements decided after the kill
}

const (
	// recoveryBase is how far back from the kill the rate before it is
	// taken (from the first POST if that is later).
	recoveryBase = 10 * time.Second
	// recoveryWindow is the sliding window over which the rate after the
	// kill is compared with half the rate before.
	recoveryWindow = time.Second
)

// killLeader kills the server that leads now with SIGKILL (and with it
// its embedded member, in that topology), and follows the survivors
// until one names a new leader. It returns nil, failing the test, when
// no server names a leader.
func (st *stack) killLeader(ctx context.Context) *failover {
	for _, s := range st.live() {
		info, err := s.c.ClusterInfo(ctx)
		if err != nil || info.Leader == "" {
			continue
		}
		for _, l := range st.servers {
			if l.name != info.Leader {
				continue
			}
			f := &failover{killed: l.name, first: -1, recovered: -1}
			if ml, err := s.c.Members(ctx); err == nil {
				for _, m := range ml.Items {
					if m.Name == l.name && m.RaftLeader {
						f.raftLeader = true
					}
				}
			}
			l.cpuSeconds() // what it used, kept after it is gone
			f.at = time.Now()
			l.kill9()
			st.tb.Logf("killed the leader %s with SIGKILL (its member led raft: %v)", l.name, f.raftLeader)
			go f.followLeader(ctx, st)
			return f
		}
	}
	st.tb.Error("no leader to kill")
	return nil
}

// followLeader asks the live servers every 20 ms who leads, until one
// names a server other than the one killed.
func (f *failover) followLeader(ctx context.Context, st *stack) {
	for ctx.Err() == nil && time.Since(f.at) < 5*time.Minute {
		for _, s := range st.live() {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			info, err := s.c.ClusterInfo(rctx)
			cancel()
			if err == nil && info.Leader != "" && info.Leader != f.killed {
				f.mu.Lock()
				f.leaderAt = time.Now()
				f.mu.Unlock()
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// failoverGap fills f's gap and recovery from the placement events seen
// (first: the first POST).
func (pl *placements) failoverGap(f *failover, first time.Time) {
	pl.mu.Lock()
	times := make([]time.Time, 0, len(pl.placed))
	for _, t := range pl.placed {
		times = append(times, t)
	}
	pl.mu.Unlock()
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	f.measure(times, first)
}

// measure computes the rate before the kill, the first placement after
// it and the recovery from sorted placement times.
func (f *failover) measure(times []time.Time, first time.Time) {
	from := f.at.Add(-recoveryBase)
	if from.Before(first) {
		from = first
	}
	n := 0
	after := -1
	for i, t := range times {
		if !t.Before(from) && t.Before(f.at) {
			n++
		}
		if after < 0 && t.After(f.at) {
			after = i
		}
	}
	if d := f.at.Sub(from).Seconds(); d > 0 {
		f.before = float64(n) / d
	}
	if after < 0 {
		return
	}
	f.afterPlaced = len(times) - after
	f.first = times[after].Sub(f.at)
	need := max(1, int(0.5*f.before*recoveryWindow.Seconds()))
	j := after
	for i := after; i < len(times); i++ {
		for times[j].Before(times[i].Add(-recoveryWindow)) {
			j++
		}
		if i-j+1 >= need {
			f.recovered = times[i].Sub(f.at)
			return
		}
	}
}

// placedAgain says whether a placement was decided after the kill.
func (f *failover) placedAgain() bool { return f.first >= 0 }

// leader is the time from the kill until a survivor named another
// leader (<0: not seen).
func (f *failover) leader() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.leaderAt.IsZero() {
		return -1
	}
	return f.leaderAt.Sub(f.at)
}

// report adds f's figures to a benchmark's: the gap to the first
// placement after the kill, to the rate recovered, to a new leader
// named, and whether the killed member led raft.
func (f *failover) report(b *testing.B) {
	if f.first >= 0 {
		b.ReportMetric(ms(f.first), "failover-first-placement-ms")
	}
	if f.recovered >= 0 {
		b.ReportMetric(ms(f.recovered), "failover-rate-recovered-ms")
	}
	if l := f.leader(); l >= 0 {
		b.ReportMetric(ms(l), "failover-leader-named-ms")
	}
	b.ReportMetric(f.before, "placed/s-before-kill")
	raft := 0.0
	if f.raftLeader {
		raft = 1
	}
	b.ReportMetric(raft, "killed-raft-leader")
	b.Logf("failover: %s", f)
}

func (f *failover) String() string {
	return fmt.Sprintf("killed %s (raft leader %v) at %s; a new leader named after %s; first placement after %s, the rate back to half of %.0f/s after %s; %d placements after the kill",
		f.killed, f.raftLeader, f.at.Format("15:04:05.000"), f.leader().Round(time.Millisecond), f.first.Round(time.Millisecond),
		f.before, f.recovered.Round(time.Millisecond), f.afterPlaced)
}

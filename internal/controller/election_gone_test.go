package controller

import (
	"context"
	"sync/atomic"
	"testing"
)

// probe is a Config.LeaderGone that answers from a flag and counts the
// questions about each leader.
type probe struct {
	gone  atomic.Bool
	asked atomic.Int64
}

func (p *probe) leaderGone(_ context.Context, leader string) bool {
	if leader == "a" {
		p.asked.Add(1)
		return p.gone.Load()
	}
	return false
}

// A follower ends the term of a leader whose server is gone at once,
// without waiting for its lease (which, on the fake clock, never
// expires here); while the probe says the leader lives, nothing moves.
func TestTakeoverFromAGoneLeader(t *testing.T) {
	tests := []struct {
		name  string
		crash bool // the leader's process is gone (its store calls fail)
	}{
		{"killed leader", true},
		// A wrong "gone" costs an election, never two leaders: the
		// deposed term sees its key change and ends.
		{"leader wrongly reported gone", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			cs := &crashStore{Store: e.st}
			p := &probe{}
			a, stopA := e.start(e.config("a", cs))
			eventually(t, "a leads", a.IsLeader)
			cfg := e.config("b", nil)
			cfg.LeaderGone = p.leaderGone
			b, _ := e.start(cfg)

			eventually(t, "b probes a", func() bool { return p.asked.Load() >= 5 })
			if b.IsLeader() || !a.IsLeader() {
				t.Fatal("leadership moved while the probe said the leader lives")
			}
			if tc.crash {
				cs.crashed.Store(true) // kill -9: the lease lingers
				stopA()
			}
			p.gone.Store(true)
			eventually(t, "b takes over before a's lease expired", b.IsLeader)
			if name, _ := b.Leader(context.Background()); name != "b" {
				t.Fatalf("leader key = %q, want b", name)
			}
			if !tc.crash {
				eventually(t, "a steps down", func() bool { return !a.IsLeader() })
				if leaders(a, b) != 1 {
					t.Fatal("two leaders")
				}
			}
		})
	}
}

package ha

import (
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

func TestFenceCommandDue(t *testing.T) {
	tm := Timings{Suspect: 4 * time.Second, Fence: 6 * time.Second, Margin: 2 * time.Second, FenceCommand: 4 * time.Second}
	calmLongAgo := t0.Add(-time.Hour)
	cases := []struct {
		name   string
		tm     Timings
		state  model.HostState
		age    time.Duration
		calm   time.Time
		tried  bool
		expect bool
	}{
		{"suspect at the command's time", tm, model.HostSuspect, 4 * time.Second, calmLongAgo, false, true},
		{"suspect before it", tm, model.HostSuspect, 3900 * time.Millisecond, calmLongAgo, false, false},
		{"ready is never fenced", tm, model.HostReady, time.Hour, calmLongAgo, false, false},
		{"failed host (unset: at the fence timeout)", Timings{Suspect: 4 * time.Second, Fence: 6 * time.Second}, model.HostFailed, 6 * time.Second, calmLongAgo, false, true},
		{"unset: not before the fence timeout", Timings{Suspect: 4 * time.Second, Fence: 6 * time.Second}, model.HostSuspect, 5 * time.Second, calmLongAgo, false, false},
		{"down is failed", tm, model.HostDown, 5 * time.Second, calmLongAgo, false, true},
		{"fenced already", tm, model.HostFenced, time.Hour, calmLongAgo, false, false},
		{"maintenance is not HA's", tm, model.HostMaintenance, time.Hour, calmLongAgo, false, false},
		{"tried once: never again in this failure", tm, model.HostSuspect, 5 * time.Second, calmLongAgo, true, false},
		{"a leader change 5 s ago: wait for a whole fence timeout", tm, model.HostSuspect, time.Minute, t0.Add(-5 * time.Second), false, false},
		{"a leader change 6 s ago: calm again", tm, model.HostSuspect, time.Minute, t0.Add(-6 * time.Second), false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := Host{Name: "h", State: c.state, LastRenewal: t0.Add(-c.age), FenceTried: c.tried}
			if got := FenceCommandDue(c.tm, t0, c.calm, h); got != c.expect {
				t.Fatalf("FenceCommandDue = %v, want %v", got, c.expect)
			}
		})
	}
}

func TestNextDeadline(t *testing.T) {
	tm := Timings{Suspect: 4 * time.Second, Fence: 6 * time.Second, Margin: 2 * time.Second, FenceCommand: 4 * time.Second}
	long := t0.Add(-time.Hour)
	at := func(age time.Duration) time.Time { return t0.Add(-age) }
	cases := []struct {
		name    string
		hosts   []Host
		calm    time.Time
		command bool
		want    time.Duration // from t0; -1: none
	}{
		{"none", nil, long, false, -1},
		{"ready: its suspect time", []Host{{State: model.HostReady, LastRenewal: at(time.Second)}}, long, false, 3 * time.Second},
		{"suspect: its fence time", []Host{{State: model.HostSuspect, LastRenewal: at(5 * time.Second)}}, long, false, time.Second},
		{"failed: fence + margin", []Host{{State: model.HostFailed, LastRenewal: at(6 * time.Second)}}, long, false, 2 * time.Second},
		{"the earliest of several", []Host{{State: model.HostReady, LastRenewal: at(0)}, {State: model.HostFailed, LastRenewal: at(7500 * time.Millisecond)}}, long, false, 500 * time.Millisecond},
		{"fenced and maintenance have none", []Host{{State: model.HostFenced, LastRenewal: long}, {State: model.HostMaintenance, LastRenewal: long}}, long, false, -1},
		{"the command's time", []Host{{State: model.HostReady, LastRenewal: at(3 * time.Second)}}, long, true, time.Second},
		{"the command waits for calm", []Host{{State: model.HostFailed, LastRenewal: at(6 * time.Second)}}, t0.Add(-4500 * time.Millisecond), true, 1500 * time.Millisecond},
		{"the command after calm", []Host{{State: model.HostFailed, LastRenewal: at(6 * time.Second)}}, t0.Add(-5 * time.Second), true, time.Second},
		{"the command tried: the timeline only", []Host{{State: model.HostSuspect, LastRenewal: at(4 * time.Second), FenceTried: true}}, long, true, 2 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := NextDeadline(tm, t0, c.calm, c.hosts, c.command)
			switch {
			case c.want < 0 && !got.IsZero():
				t.Fatalf("NextDeadline = %v, want none", got.Sub(t0))
			case c.want >= 0 && !got.Equal(t0.Add(c.want)):
				t.Fatalf("NextDeadline = %v from now, want %v", got.Sub(t0), c.want)
			}
		})
	}
}

// Every state change HostSteps makes, and every command FenceCommandDue
// allows, happens at a deadline NextDeadline announced before: a timer
// to it is never late, whatever the policy.
func TestNextDeadlineAnnouncesEveryStep(t *testing.T) {
	for _, p := range []model.HAPolicy{model.DefaultHAPolicy(), {FenceCommandMillis: 4000},
		{HeartbeatMillis: 200, SuspectMillis: 500, FenceMillis: 1000, MarginMillis: 200, FenceCommandMillis: 700}} {
		tm := TimingsOf(p)
		h := Host{Name: "h", State: model.HostReady, LastRenewal: t0}
		calm := t0.Add(-time.Second)
		now := t0
		for range 10 {
			next := NextDeadline(tm, now, calm, []Host{h}, true)
			if next.IsZero() {
				break
			}
			// just before it nothing is due; at it something is
			before := next.Add(-time.Millisecond)
			if len(HostSteps(tm, before, []Host{h})) > 0 || FenceCommandDue(tm, before, calm, h) {
				t.Fatalf("%v: a step before the announced deadline %v", p, next.Sub(t0))
			}
			steps := HostSteps(tm, next, []Host{h})
			due := FenceCommandDue(tm, next, calm, h)
			if len(steps) == 0 && !due {
				t.Fatalf("%v: nothing due at the announced deadline %v (state %s)", p, next.Sub(t0), h.State)
			}
			for _, s := range steps {
				h.State = s.To
			}
			if due {
				h.FenceTried = true
			}
			now = next
		}
		if h.State != model.HostFenced {
			t.Fatalf("%v: ended %s, want fenced", p, h.State)
		}
	}
}

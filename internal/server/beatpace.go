package server

import (
	"sync"
	"time"
)

// The heartbeat's pace: how often agents are told to beat, and the TTL of
// the liveness leases they renew (docs/scale.md, "Eighth round: the
// beat's pace").
//
// The interval is chosen from the hosts of the whole control plane (every
// server renews its hosts' leases on the one store, whose raft leader
// answers them all) so that the plane is offered about
// Config.HeartbeatBudget beats a second, never less than the HA policy's
// heartbeat; and it is stretched, up to the longest interval a host may
// be given, while this server's renewals lag, so that a store that falls
// behind is asked for fewer beats instead of seeing leases lapse (each
// lapse a grant and a write through raft, which puts it further behind).
// Leases are granted for the longest interval, so that a stretch renews
// them as they are, never granting anew.

const (
	// MaxHeartbeatInterval bounds the interval agents are told.
	MaxHeartbeatInterval = 10 * time.Second
	// DefaultHeartbeatBudget is the beats a second the control plane is
	// sized for (Config.HeartbeatBudget): one server answered about
	// 1,000 a second at rest on two cores (docs/scale.md).
	DefaultHeartbeatBudget = 1000
	// paceFloorShare: a control plane whose hosts beat, at the policy's
	// heartbeat, less than this share of the budget is never stretched
	// (its beats are not what loads it), so its leases last the suspect
	// timeout as the HA policy's timeline says (docs/ha.md).
	paceFloorShare = 5
	// A renewal is slow past paceSlow (or when it failed, or its lease
	// had lapsed) and fast under paceFast. At the end of each window
	// (paceWindow, or the interval when longer, and at least paceMinBeats
	// renewals) the stretch grows by paceGrow when more than a tenth were
	// slow, and shrinks by paceShrink when nine in ten were fast.
	paceSlow     = 200 * time.Millisecond
	paceFast     = 50 * time.Millisecond
	paceWindow   = 2 * time.Second
	paceMinBeats = 20
	paceGrow     = 1.5
	paceShrink   = 0.8
)

// beatTiming is what a beat is answered with and granted.
type beatTiming struct {
	interval time.Duration // what agents are told now
	longest  time.Duration // the longest interval a host may be given
	ttl      int           // seconds: the TTL of leases granted now
	// limit is the most the stretch may be: longest ÷ the nominal interval
	limit float64
	// capped: the fence timeout held the interval below what the hosts
	// ask for (logged once)
	capped bool
}

// paceInput is what the timing is chosen from.
type paceInput struct {
	hosts  int // hosts beating anywhere in the control plane
	budget int // beats a second the plane is sized for
	// the HA policy's heartbeat, suspect, fence and margin
	base, suspect, fence, margin time.Duration
	stretch                      float64 // ≥ 1: the lag's (beatPace)
}

// paceTiming chooses the interval and the lease TTL. The nominal interval
// is hosts ÷ budget, at least base; the longest is MaxHeartbeatInterval
// for a plane large enough to stretch, base for a small one, and never
// past half the fence timeout (an agent that has not renewed for the
// fence timeout kills its VMs: it must have a second try before then).
// The interval is the nominal one times the stretch, up to the longest.
func paceTiming(in paceInput) beatTiming {
	nominal := in.base
	if in.budget > 0 {
		nominal = max(nominal, time.Duration(in.hosts)*time.Second/time.Duration(in.budget))
	}
	nominal = min(nominal, MaxHeartbeatInterval)
	longest := nominal
	if in.base > 0 && float64(in.hosts)/in.base.Seconds() > float64(in.budget)/paceFloorShare {
		longest = MaxHeartbeatInterval
	}
	t := beatTiming{}
	if in.fence > 0 && longest > in.fence/2 {
		longest = max(in.fence/2, 500*time.Millisecond)
		t.capped = nominal > longest
	}
	nominal = min(nominal, longest)
	iv := nominal
	if in.stretch > 1 {
		iv = min(time.Duration(float64(nominal)*in.stretch).Round(100*time.Millisecond), longest)
	}
	t.interval, t.longest = max(iv, nominal), longest
	t.limit = float64(longest) / float64(max(nominal, time.Millisecond))
	t.ttl = leaseTTL(longest, in.suspect, in.fence, in.margin)
	return t
}

// leaseTTL is the TTL, in seconds, of a liveness lease for hosts that may
// be told to beat as seldom as every longest: three such beats and a
// second, but not past the fence timeout and its margin (by then the
// agent has fenced itself and the leader fences the host: a longer lease
// would only delay that) and at least the HA policy's suspect timeout (a
// host whose lease expired is suspect at once: the leader bounds its last
// renewal by the expiry less the TTL), rounded up to whole seconds.
func leaseTTL(longest, suspect, fence, margin time.Duration) int {
	ttl := 3*longest + time.Second
	if fence > 0 {
		ttl = min(ttl, fence+margin)
	}
	ttl = max(ttl, suspect)
	return int((ttl + time.Second - 1) / time.Second)
}

// beatPace measures this server's renewals and holds the stretch of the
// interval (≥ 1) they call for. Its counts are per window: a beat costs a
// lock and three comparisons.
type beatPace struct {
	mu      sync.Mutex
	stretch float64
	from    time.Time
	n       int // renewals in the window
	slow    int // ... slower than paceSlow, failed or lapsed
	fast    int // ... faster than paceFast
}

// factor is the stretch now.
func (p *beatPace) factor() float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return max(p.stretch, 1)
}

// observe counts one renewal, answered at now after d (slow: it failed
// or found its lease lapsed, whatever d), and at the end of a window
// grows or shrinks the stretch, up to limit; iv is the interval now (a
// window lasts at least one, so that agents heard the last change). It
// returns the stretch and whether this renewal changed it.
func (p *beatPace) observe(now time.Time, d time.Duration, slow bool, iv time.Duration, limit float64) (float64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.from.IsZero() {
		p.from = now
	}
	p.n++
	switch {
	case slow || d > paceSlow:
		p.slow++
	case d < paceFast:
		p.fast++
	}
	was := max(p.stretch, 1)
	if now.Sub(p.from) < max(paceWindow, iv) || p.n < paceMinBeats {
		return was, false
	}
	s := was
	switch {
	case p.slow*10 > p.n:
		s *= paceGrow
	case p.fast*10 >= p.n*9:
		s *= paceShrink
	}
	p.stretch = min(max(s, 1), max(limit, 1))
	p.from, p.n, p.slow, p.fast = now, 0, 0, 0
	return p.stretch, p.stretch != was
}

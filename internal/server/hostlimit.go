package server

import (
	"net/http"
	"sync"
	"time"
)

// Per-host request limits on the agent listener. A joined host is not
// trusted: without a limit one host could send thousands of status
// reports, events or long polls a second, each a store transaction or a
// wake, and starve every other host's heartbeats. A real agent stays far
// below: its heartbeat is at most a few a second, and its other calls
// follow changes of its own VMs.
const (
	// DefaultAgentRate is the requests a second one host may make, after a
	// burst of agentBurstFactor times as many (a host that boots hundreds
	// of VMs reports each); heartbeats are counted apart.
	DefaultAgentRate = 100
	agentBurstFactor = 10
	// beatRate and beatBurst bound one host's heartbeats (tests beat every
	// 10 ms; the real interval is 1–10 s).
	beatRate  = 100
	beatBurst = 200
)

// hostLimits holds one token bucket per host and kind (heartbeat or
// other). Hosts are the certificates' names, so the map is bounded by the
// hosts that joined.
type hostLimits struct {
	mu      sync.Mutex
	rate    float64 // requests a second; 0 = no limit
	buckets map[hostLimitKey]*limiter
}

type hostLimitKey struct {
	host string
	beat bool
}

func newHostLimits(rate float64) *hostLimits {
	if rate < 0 {
		rate = 0
	}
	return &hostLimits{rate: rate, buckets: map[hostLimitKey]*limiter{}}
}

// allow takes a token from host's bucket; when there is none it answers
// how long until there is one.
func (h *hostLimits) allow(host string, beat bool, now time.Time) (bool, time.Duration) {
	if h == nil || h.rate == 0 || host == "" {
		return true, 0
	}
	k := hostLimitKey{host, beat}
	h.mu.Lock()
	l := h.buckets[k]
	if l == nil {
		l = &limiter{rate: h.rate, burst: h.rate * agentBurstFactor}
		if beat {
			l.rate, l.burst = beatRate, beatBurst
		}
		h.buckets[k] = l
	}
	h.mu.Unlock()
	if l.allow(now) {
		return true, 0
	}
	l.mu.Lock()
	wait := time.Duration((1 - l.tokens) / l.rate * float64(time.Second))
	l.mu.Unlock()
	return false, wait
}

// forget drops a host's buckets (the host was deleted).
func (h *hostLimits) forget(host string) {
	h.mu.Lock()
	delete(h.buckets, hostLimitKey{host, false})
	delete(h.buckets, hostLimitKey{host, true})
	h.mu.Unlock()
}

// tooManyRequests is the answer to a host over its limit; Retry-After
// says when it may ask again.
func (h *hostLimits) tooManyRequests(w http.ResponseWriter, host string, beat bool, wait time.Duration) *httpError {
	what, rate := "requests", h.rate
	if beat {
		what, rate = "heartbeats", beatRate
	}
	return rateLimited(w, wait, "host %s sends more than %g %s a second to the agent listener", host, rate, what)
}

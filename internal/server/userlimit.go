package server

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
)

// Request limits on the user API. Quotas bound what a tenant creates, not
// how often it asks: without a limit one project's script could list
// 100,000 VMs in a loop, or spray made-up tokens (each a store read when
// the server's view does not hold it), and take the servers' CPU from
// every other project and from the agents' heartbeats.
//
//   - Authenticated requests: one token bucket per project, shared by all
//     of the project's tokens (a project admin can mint tokens; they do
//     not multiply its rate), and one per token that has no project.
//     Cluster admins are not limited: they can change the limit anyway.
//   - Failed authentications: one bucket per client address. While it is
//     empty the address is answered 429 before its token is looked up.
const (
	// DefaultAPIRate is the requests a second one project may make, in
	// bursts of apiBurstFactor times as many.
	DefaultAPIRate = 50
	apiBurstFactor = 10
	// authFailRate and authFailBurst bound one address's failed
	// authentications.
	authFailRate  = 5
	authFailBurst = 50
	// limitSweepAt is the map size from which full buckets (idle callers)
	// are dropped when a new one is added.
	limitSweepAt = 4096
)

// userLimits holds the user API's buckets.
type userLimits struct {
	rate float64 // requests a second per project; 0 = no limit
	mu   sync.Mutex
	// callers is keyed "p:PROJECT" or "t:TOKEN-ID"; fails by address.
	callers map[string]*limiter
	fails   map[string]*limiter
}

func newUserLimits(rate float64) *userLimits {
	if rate < 0 {
		rate = 0
	}
	return &userLimits{rate: rate, callers: map[string]*limiter{}, fails: map[string]*limiter{}}
}

// callerKey is the bucket a principal draws from; "" is not limited.
func callerKey(p *principal) string {
	switch {
	case p == nil || p.clusterAdmin():
		return ""
	case p.tok.Project != "":
		return "p:" + p.tok.Project
	default:
		return "t:" + p.tok.ID
	}
}

// allow takes a token from p's bucket; when there is none it answers how
// long until there is one.
func (u *userLimits) allow(p *principal, now time.Time) (bool, time.Duration) {
	key := callerKey(p)
	if u == nil || u.rate == 0 || key == "" {
		return true, 0
	}
	l := u.bucket(u.callers, key, u.rate, u.rate*apiBurstFactor, now)
	return take(l, now)
}

// authBlocked reports whether the address of r has no failed
// authentication left, without taking one.
func (u *userLimits) authBlocked(r *http.Request, now time.Time) (bool, time.Duration) {
	if u == nil || u.rate == 0 {
		return false, 0
	}
	u.mu.Lock()
	l := u.fails[clientAddr(r)]
	u.mu.Unlock()
	if l == nil {
		return false, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tokens := min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	if tokens >= 1 {
		return false, 0
	}
	return true, time.Duration((1 - tokens) / l.rate * float64(time.Second))
}

// authFailed takes a failed authentication from the address of r.
func (u *userLimits) authFailed(r *http.Request, now time.Time) {
	if u == nil || u.rate == 0 {
		return
	}
	u.bucket(u.fails, clientAddr(r), authFailRate, authFailBurst, now).allow(now)
}

// bucket returns m's limiter for key, adding one (full) when there is
// none. Past limitSweepAt entries, buckets that have refilled are dropped
// first: they are the same as no bucket.
func (u *userLimits) bucket(m map[string]*limiter, key string, rate, burst float64, now time.Time) *limiter {
	u.mu.Lock()
	defer u.mu.Unlock()
	if l := m[key]; l != nil {
		return l
	}
	if len(m) >= limitSweepAt {
		for k, l := range m {
			l.mu.Lock()
			full := l.tokens+now.Sub(l.last).Seconds()*l.rate >= l.burst
			l.mu.Unlock()
			if full {
				delete(m, k)
			}
		}
	}
	l := &limiter{rate: rate, burst: burst}
	m[key] = l
	return l
}

// take is limiter.allow that also says how long until a token.
func take(l *limiter, now time.Time) (bool, time.Duration) {
	if l.allow(now) {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return false, time.Duration((1 - l.tokens) / l.rate * float64(time.Second))
}

// clientAddr is the address a request came from (no proxy header is
// trusted: a caller could name any address in it).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// rateLimited is the answer to a caller over its limit; Retry-After says
// when it may ask again.
func rateLimited(w http.ResponseWriter, wait time.Duration, format string, args ...any) *httpError {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return errf(http.StatusTooManyRequests, api.CodeRateLimited, "", format+"; retry after %d s", append(args, secs)...)
}

// overLimit names what p is over.
func (u *userLimits) overLimit(w http.ResponseWriter, p *principal, wait time.Duration) *httpError {
	if p.tok.Project != "" {
		return rateLimited(w, wait, "project %s makes more than %g API requests a second (all its tokens together; the server's --api-rate)", p.tok.Project, u.rate)
	}
	return rateLimited(w, wait, "token %s makes more than %g API requests a second (the server's --api-rate)", p.tok.ID, u.rate)
}

package server

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// Backpressure on creates. Admission is cheaper than placement: left
// alone, creates run ahead of the scheduler when the CPU is short, the
// VMs admitted but not yet placed pile up, and the time from create to
// placement grows without bound (issue 14, fifth round: p99 up to 5.6 s
// at fifty VMs a POST). So a create waits, up to PendingWait, while the
// VMs that wait for the scheduler's first decision are at
// MaxPendingPlacements, and is then refused with 429 rate_limited and a
// Retry-After. The count is the cluster's, as this server's view sees it
// (every VM pending with no host and no explanation yet: a VM that fits
// nowhere has the scheduler's explanation and does not count), plus this
// server's creates between their check and their admission.

const (
	// DefaultMaxPendingPlacements is Config.MaxPendingPlacements' default:
	// a few of the gate's groups (up to about 250 placements each), so that
	// the scheduler always has the next group ready.
	DefaultMaxPendingPlacements = 1000
	// DefaultPendingWait is Config.PendingWait's default.
	DefaultPendingWait = 2 * time.Second
)

// placeBacklog counts the VMs that wait for the scheduler.
type placeBacklog struct {
	mu        sync.Mutex
	undecided int // in the view
	reserved  int // this server's creates between check and admission
	limit     int // <= 0: none
	wait      time.Duration
	wake      chan struct{} // closed (and replaced) when the count falls
}

func newPlaceBacklog(limit int, wait time.Duration) *placeBacklog {
	if limit == 0 {
		limit = DefaultMaxPendingPlacements
	}
	if wait <= 0 {
		wait = DefaultPendingWait
	}
	return &placeBacklog{limit: limit, wait: wait, wake: make(chan struct{})}
}

// awaitsScheduler says whether vm waits for the scheduler's first
// decision.
func awaitsScheduler(vm *model.VM) bool {
	return vm != nil && vm.DeletedAt == nil && vm.Status.Phase == model.PhasePending &&
		vm.Status.Host == "" && vm.Status.Explanation == nil
}

// changed follows one VM change of the view (old or cur nil: created or
// deleted).
func (b *placeBacklog) changed(old, cur *model.VM) {
	if b == nil {
		return
	}
	d := 0
	if awaitsScheduler(old) {
		d--
	}
	if awaitsScheduler(cur) {
		d++
	}
	if d != 0 {
		b.add(d)
	}
}

// reset sets the view's count (after the view re-listed).
func (b *placeBacklog) reset(n int) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.undecided = n
	b.signal()
	b.mu.Unlock()
}

func (b *placeBacklog) add(d int) {
	b.mu.Lock()
	b.undecided += d
	if d < 0 {
		b.signal()
	}
	b.mu.Unlock()
}

// signal wakes the waiters (b.mu held).
func (b *placeBacklog) signal() {
	close(b.wake)
	b.wake = make(chan struct{})
}

// pending is the count a create is checked against.
func (b *placeBacklog) pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(b.undecided, 0) + b.reserved
}

// acquire holds room for n VMs, waiting up to b.wait for it; release
// gives it back once their admission has answered (the view counts them
// from then on). A call finds room when the count plus n stays within
// the limit, or when nothing waits (a batch larger than the limit still
// goes, alone). The refusal is a 429 with Retry-After.
func (b *placeBacklog) acquire(ctx context.Context, w http.ResponseWriter, n int) (release func(), err error) {
	if b == nil || b.limit < 0 {
		return func() {}, nil
	}
	var timeout <-chan time.Time
	for {
		b.mu.Lock()
		have := max(b.undecided, 0) + b.reserved
		if have == 0 || have+n <= b.limit {
			b.reserved += n
			b.mu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					b.mu.Lock()
					b.reserved -= n
					b.signal()
					b.mu.Unlock()
				})
			}, nil
		}
		wake := b.wake
		b.mu.Unlock()
		if timeout == nil {
			t := time.NewTimer(b.wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-wake:
		case <-timeout:
			return nil, b.refuse(w, have, n)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// refuse answers 429: have VMs wait for the scheduler, n more asked for.
func (b *placeBacklog) refuse(w http.ResponseWriter, have, n int) error {
	secs := max(1, int(math.Ceil(b.wait.Seconds()/2)))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	return errf(http.StatusTooManyRequests, api.CodeRateLimited, "",
		"%d VMs wait for placement and this server admits at most %d (--max-pending-placements) before the scheduler catches up; %d more asked for: retry after %d s",
		have, b.limit, n, secs)
}

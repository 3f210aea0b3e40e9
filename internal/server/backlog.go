package server

import (
	"context"
	"net/http"
	"sync"
	"time"

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
	// several of the gate's groups (up to about 250 placements each, the
	// group in flight and the one being decided counted too), so that the
	// scheduler always has the next group ready; 1,000 cut the groups at
	// fifty VMs a POST to about 65 (sixth round). At 2,000, 64 clients
	// creating fifty a POST (3,200 in flight) had 52–107 POSTs refused
	// in a run, and their Retry-After pushed the p99 create-to-placed up
	// on a busy machine; 5,000 lets such a load through and still bounds
	// a burst of bigger ones.
	DefaultMaxPendingPlacements = 5000
	// DefaultPendingWait is Config.PendingWait's default.
	DefaultPendingWait = 2 * time.Second
)

// placeBacklog counts the VMs that wait for the scheduler; creates that
// find no room wait in line, first come first served (a waiter woken
// with the others after each placement, as a first version did, could
// lose every race for its whole wait: 252 refusals in a run at fifty VMs
// a POST).
type placeBacklog struct {
	mu        sync.Mutex
	undecided int // in the view
	reserved  int // this server's creates between check and admission
	limit     int // <= 0: none
	wait      time.Duration
	line      []*backlogWaiter
}

type backlogWaiter struct {
	n       int
	granted bool
	ready   chan struct{} // closed when granted
}

func newPlaceBacklog(limit int, wait time.Duration) *placeBacklog {
	if limit == 0 {
		limit = DefaultMaxPendingPlacements
	}
	if wait <= 0 {
		wait = DefaultPendingWait
	}
	return &placeBacklog{limit: limit, wait: wait}
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
		b.mu.Lock()
		b.undecided += d
		b.grant()
		b.mu.Unlock()
	}
}

// reset sets the view's count (after the view re-listed).
func (b *placeBacklog) reset(n int) {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.undecided = n
	b.grant()
	b.mu.Unlock()
}

// fits says whether n more VMs find room (b.mu held): the count plus n
// stays within the limit, or nothing waits (a batch larger than the
// limit still goes, alone).
func (b *placeBacklog) fits(n int) bool {
	have := max(b.undecided, 0) + b.reserved
	return have == 0 || have+n <= b.limit
}

// grant lets the head of the line in while it fits (b.mu held).
func (b *placeBacklog) grant() {
	for len(b.line) > 0 && b.fits(b.line[0].n) {
		w := b.line[0]
		b.line = b.line[1:]
		b.reserved += w.n
		w.granted = true
		close(w.ready)
	}
}

// pending is the count a create is checked against.
func (b *placeBacklog) pending() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(b.undecided, 0) + b.reserved
}

// acquire holds room for n VMs, waiting in line up to b.wait for it;
// release gives it back once their admission has answered (the view
// counts them from then on). The refusal is a 429 with Retry-After.
func (b *placeBacklog) acquire(ctx context.Context, w http.ResponseWriter, n int) (release func(), err error) {
	if b == nil || b.limit < 0 {
		return func() {}, nil
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			b.mu.Lock()
			b.reserved -= n
			b.grant()
			b.mu.Unlock()
		})
	}
	b.mu.Lock()
	if len(b.line) == 0 && b.fits(n) {
		b.reserved += n
		b.mu.Unlock()
		return release, nil
	}
	me := &backlogWaiter{n: n, ready: make(chan struct{})}
	b.line = append(b.line, me)
	b.mu.Unlock()
	t := time.NewTimer(b.wait)
	defer t.Stop()
	var cause error
	select {
	case <-me.ready:
		return release, nil
	case <-t.C:
	case <-ctx.Done():
		cause = ctx.Err()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if me.granted { // granted as the wait ended
		if cause != nil {
			b.reserved -= n
			b.grant()
			return nil, cause
		}
		return release, nil
	}
	for i, x := range b.line {
		if x == me {
			b.line = append(b.line[:i:i], b.line[i+1:]...)
			break
		}
	}
	b.grant() // a large head leaving may let smaller ones in
	if cause != nil {
		return nil, cause
	}
	return nil, b.refuse(w, max(b.undecided, 0)+b.reserved, n)
}

// refuse answers 429: have VMs wait for the scheduler, n more asked for.
func (b *placeBacklog) refuse(w http.ResponseWriter, have, n int) error {
	return rateLimited(w, b.wait/2,
		"%d VMs wait for placement and this server admits at most %d (--max-pending-placements) before the scheduler catches up; %d more asked for",
		have, b.limit, n)
}

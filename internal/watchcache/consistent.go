package watchcache

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/store"
)

// A consistent read needs the store's revision as of a moment after the
// request came: any earlier read may miss a write acknowledged just
// before the request. So requests share reads, but only reads that
// begin after they came: a request that finds a read in flight does not
// join it; it waits for the next one, which begins when the running one
// ends and which every request that came meanwhile shares. At most one
// read is in flight per cache and one waits to begin, however many
// requests come (a list burst or 1,000 agents' long polls cost the
// store one read each round trip, not one each).

// revRead is one read of the store's revision, shared by the requests
// that came before it began.
type revRead struct {
	done    chan struct{} // closed when rev and err are set
	rev     int64
	err     error
	callers int // requests sharing it (under revReads.mu)
}

// revReads is the cache's read in flight and the one to begin next.
type revReads struct {
	mu      sync.Mutex
	cur     *revRead // in flight; nil: none
	next    *revRead // begins when the running one ends; nil: none asked
	running bool
}

// revReadTimeout bounds one shared read (its requests wait no longer
// than their own contexts allow).
const revReadTimeout = 10 * time.Second

// StoreRev returns the store's current revision as of some moment after
// the call: at least that of every write acknowledged before it. It is
// read linearizably (store.RevisionReader, else a List of key, which
// should exist or be cheap to look for), in a read shared with the
// other callers that came before it began.
func (c *Cache) StoreRev(ctx context.Context, key string) (int64, error) {
	c.reads.mu.Lock()
	r := c.reads.next
	if r == nil {
		r = &revRead{done: make(chan struct{})}
		c.reads.next = r
	}
	r.callers++
	lead := !c.reads.running
	if lead {
		// The first caller reads for its own group in its goroutine
		// (no hand-over on a quiet server); groups formed meanwhile
		// are read by readRevs.
		c.reads.running = true
		c.reads.next, c.reads.cur = nil, r
	}
	c.reads.mu.Unlock()
	if lead {
		c.readOne(r, key)
		c.reads.mu.Lock()
		c.reads.cur = nil
		if c.reads.next != nil {
			go c.readRevs(key)
		} else {
			c.reads.running = false
		}
		c.reads.mu.Unlock()
	}
	select {
	case <-r.done:
		return r.rev, r.err
	case <-ctx.Done():
		return 0, fmt.Errorf("watchcache: read the store's revision: %w", ctx.Err())
	}
}

// readRevs reads for the groups waiting, one at a time, until none is.
func (c *Cache) readRevs(key string) {
	for {
		c.reads.mu.Lock()
		r := c.reads.next
		c.reads.next, c.reads.cur = nil, r
		if r == nil {
			c.reads.running = false
			c.reads.mu.Unlock()
			return
		}
		c.reads.mu.Unlock()
		c.readOne(r, key)
	}
}

// readOne reads the revision for r's group. The read is not bound to
// any one caller's context: a caller that gives up must not fail the
// others.
func (c *Cache) readOne(r *revRead, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), revReadTimeout)
	defer cancel()
	if rr, ok := c.st.(store.RevisionReader); ok {
		r.rev, r.err = rr.Revision(ctx)
	} else {
		_, r.rev, r.err = c.st.List(ctx, key)
	}
	if r.err != nil {
		r.err = fmt.Errorf("watchcache: read the store's revision: %w", r.err)
	}
	c.revReads.Add(1)
	close(r.done)
}

// RevReads is the number of revision reads the cache made for
// StoreRev and Consistent (shared reads count once).
func (c *Cache) RevReads() int64 { return c.revReads.Load() }

// Consistent reads the store's current revision (StoreRev) and waits
// until the cache has applied it; it returns that revision.
func (c *Cache) Consistent(ctx context.Context, key string) (int64, error) {
	rev, err := c.StoreRev(ctx, key)
	if err != nil {
		return 0, err
	}
	return rev, c.WaitRev(ctx, rev)
}

// revWaiter is a WaitRev call parked until the cache applies rev.
type revWaiter struct {
	rev int64
	ch  chan struct{}
}

// WaitRev blocks until the cache has applied revision rev. A waiter is
// woken once, by the advance that reaches its revision (not by every
// event before it).
func (c *Cache) WaitRev(ctx context.Context, rev int64) error {
	if err := c.WaitSynced(ctx); err != nil {
		return err
	}
	c.mu.RLock()
	have := c.rev
	c.mu.RUnlock()
	if have >= rev {
		return nil
	}
	c.mu.Lock()
	if c.rev >= rev {
		c.mu.Unlock()
		return nil
	}
	w := &revWaiter{rev: rev, ch: make(chan struct{})}
	c.waiters = append(c.waiters, w)
	c.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		have = c.rev
		for i, o := range c.waiters {
			if o == w {
				c.waiters = append(c.waiters[:i], c.waiters[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
		if have >= rev {
			return nil
		}
		return fmt.Errorf("%w: at revision %d, waiting for %d: %w", ErrNotSynced, have, rev, ctx.Err())
	}
}

// wake releases the waiters the applied revision reached (write lock
// held).
func (c *Cache) wake() {
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.rev <= c.rev {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	clear(c.waiters[len(kept):])
	c.waiters = kept
}

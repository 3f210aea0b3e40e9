package server

import (
	"context"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// jobsWatch serves the agents' backups long polls. Each poll used to open
// two store watches of its own (backups and restores) and read both whole
// prefixes when it returned: an agent polls every 10 s, so at 10,000
// hosts that was 2,000 watches opened and 2,000 range reads a second at
// rest, with nothing to back up. Now one watch of each prefix serves the
// whole server, a poll waits on its broadcast, and the lists are read
// from the store once per change, the unfinished jobs kept.
type jobsWatch struct {
	s    *Server
	once sync.Once

	mu sync.Mutex
	// since is the first revision the watches cover: a poll after an
	// earlier revision cannot be told "nothing changed".
	since int64
	last  int64         // the revision of the last change seen
	wake  chan struct{} // closed at the next change
	// lists are the unfinished jobs last read, valid while no change came
	// after lists.rev
	lists *jobLists
}

// jobLists are the backups and restores not yet final.
type jobLists struct {
	rev      int64 // both lists are current at least up to rev
	answer   int64 // the revision a poll answers with
	backups  []*model.Backup
	restores []*model.Restore
}

// start opens the watches once, on the first poll; they run until the
// server drains.
func (j *jobsWatch) start(ctx context.Context) {
	j.once.Do(func() {
		j.mu.Lock()
		j.wake = make(chan struct{})
		j.mu.Unlock()
		cctx, cancel := context.WithTimeout(j.s.drainCtx, 10*time.Second)
		rev := j.current(cctx)
		cancel()
		j.mu.Lock()
		j.since = rev + 1
		j.mu.Unlock()
		for _, prefix := range []string{store.BackupsPrefix, store.RestoresPrefix} {
			go j.watch(prefix, rev+1)
		}
	})
}

// current is the store's revision now (0 when it cannot be read: every
// poll then reads afresh until a watch reports).
func (j *jobsWatch) current(ctx context.Context) int64 {
	if rr, ok := j.s.cfg.Store.(store.RevisionReader); ok {
		if rev, err := rr.Revision(ctx); err == nil {
			return rev
		}
		return 0
	}
	_, rev, err := j.s.cfg.Store.List(ctx, store.LeaderKey)
	if err != nil {
		return 0
	}
	return rev
}

// watch follows prefix from rev until the server drains; when the watch
// breaks (compaction, a lost member) it starts again from the store's
// revision and counts that as a change, so no poll misses one.
func (j *jobsWatch) watch(prefix string, rev int64) {
	ctx := j.s.drainCtx
	for ctx.Err() == nil {
		for resp := range j.s.cfg.Store.Watch(ctx, prefix, rev) {
			if resp.Err != nil {
				break
			}
			for _, ev := range resp.Events {
				rev = max(rev, ev.Rev+1)
				j.changed(ev.Rev)
			}
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if cur := j.current(ctx); cur > 0 {
			rev = cur + 1
			j.changed(cur)
		}
	}
}

// changed records a change at rev and wakes the waiting polls.
func (j *jobsWatch) changed(rev int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if rev <= j.last {
		return
	}
	j.last = rev
	close(j.wake)
	j.wake = make(chan struct{})
}

// wait returns once a backup or restore changed after rev, or after
// wait, or when ctx ends.
func (j *jobsWatch) wait(ctx context.Context, rev int64, wait time.Duration) {
	j.start(ctx)
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		j.mu.Lock()
		done := j.last > rev || j.since == 0 || j.since > rev+1
		ch := j.wake
		j.mu.Unlock()
		if done {
			return
		}
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// read returns the unfinished jobs: those last read while no change came
// after them, else read from the store again.
func (j *jobsWatch) read(ctx context.Context) (*jobLists, error) {
	j.start(ctx)
	j.mu.Lock()
	l, last, since := j.lists, j.last, j.since
	j.mu.Unlock()
	if l != nil && since > 0 && l.rev >= last && l.rev >= since-1 {
		return l, nil
	}
	bs, brev, err := j.s.repo.ListBackups(ctx, "")
	if err != nil {
		return nil, err
	}
	rs, rrev, err := j.s.repo.ListRestores(ctx, "")
	if err != nil {
		return nil, err
	}
	l = &jobLists{rev: min(brev, rrev), answer: max(brev, rrev)}
	for _, b := range bs {
		if !b.Phase.Final() {
			l.backups = append(l.backups, b)
		}
	}
	for _, r := range rs {
		if !r.Phase.Final() {
			l.restores = append(l.restores, r)
		}
	}
	j.mu.Lock()
	if j.lists == nil || l.rev > j.lists.rev {
		j.lists = l
	}
	j.mu.Unlock()
	return l, nil
}

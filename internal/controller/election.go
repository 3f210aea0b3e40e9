package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// term is one leadership term. Its fence is a transaction guard that
// holds only while the term lasts (the leader key is still the one this
// term wrote), and repo — the only way the term's controllers write —
// attaches it to every transaction (state.Repo.Term), so a deposed leader
// that has not noticed yet cannot commit anything.
type term struct {
	fence []store.Cond
	repo  *state.Repo
	once  sync.Once
	// lost is closed when a write found the term over (ErrNotLeader):
	// the controllers stop and the manager campaigns again.
	lost chan struct{}
}

// newTerm starts a term fenced by fence (none: NoElection).
func (m *Manager) newTerm(fence ...store.Cond) *term {
	repo := state.New(m.cfg.Store, m.cfg.Clock)
	repo.SetMaxTxnOps(m.cfg.MaxTxnOps)
	return &term{fence: fence, repo: repo.Term(fence...), lost: make(chan struct{})}
}

// check ends the term when err says another server leads now.
func (t *term) check(err error) {
	if errors.Is(err, state.ErrNotLeader) {
		t.once.Do(func() { close(t.lost) })
	}
}

func (m *Manager) leaseSeconds() int64 {
	return max(1, int64(m.cfg.LeaseTTL.Round(time.Second)/time.Second))
}

// campaign tries once to become leader: it leads until the term ends, or
// follows until the leader key vanishes. Either way it returns so Run can
// campaign again.
func (m *Manager) campaign(ctx context.Context) error {
	st := m.cfg.Store
	lease, err := st.Grant(ctx, m.leaseSeconds())
	if err != nil {
		return fmt.Errorf("controller: grant leader lease: %w", err)
	}
	ok, rev, err := st.Txn(ctx,
		[]store.Cond{store.IfAbsent(store.LeaderKey)},
		[]store.Op{store.PutWithLease(store.LeaderKey, []byte(m.cfg.Identity), lease)})
	if err != nil || !ok {
		m.revoke(ctx, lease)
		if err != nil {
			return fmt.Errorf("controller: claim leader key: %w", err)
		}
		return m.follow(ctx)
	}
	return m.lead(ctx, lease, rev)
}

// revoke ends a lease, even when ctx has ended, within a short deadline.
func (m *Manager) revoke(ctx context.Context, lease store.LeaseID) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := m.cfg.Store.Revoke(rctx, lease); err != nil && !errors.Is(err, store.ErrNoLease) {
		m.log.Debug("revoke leader lease", "err", err)
	}
}

// follow waits until the leader key is deleted (the leader resigned or its
// lease expired).
func (m *Manager) follow(ctx context.Context) error {
	kv, err := m.cfg.Store.Get(ctx, store.LeaderKey)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("controller: read leader key: %w", err)
	}
	m.log.Debug("following", "leader", string(kv.Value))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if m.cfg.LeaderGone != nil {
		go m.deposeIfGone(wctx, string(kv.Value), kv.ModRev)
	}
	for resp := range m.cfg.Store.Watch(wctx, store.LeaderKey, kv.ModRev+1) {
		if resp.Err != nil {
			// Compacted or broken: campaign again, which re-reads.
			return nil
		}
		for _, ev := range resp.Events {
			if ev.KV.Key == store.LeaderKey && ev.Type == store.EventDelete {
				return nil
			}
		}
	}
	return nil
}

// lead runs the controllers for one term. The term ends when ctx ends
// (resign), when the lease cannot be renewed within its TTL, when the
// leader key changes under us, or when the controllers fail.
func (m *Manager) lead(ctx context.Context, lease store.LeaseID, rev int64) error {
	m.terms.Add(1)
	m.leading.Store(true)
	defer m.leading.Store(false)
	m.log.Info("elected leader", "revision", rev)

	tctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	t := m.newTerm(store.IfRev(store.LeaderKey, rev))
	go func() { done <- m.runControllers(tctx, t) }()

	why, err := m.holdLease(tctx, lease, rev, done)
	stopped := why == "controllers stopped" // done was read
	if errors.Is(err, state.ErrNotLeader) {
		why, err = "deposed: a write found another leader", nil
	}
	m.leading.Store(false)
	cancel()
	if !stopped {
		if cerr := <-done; err == nil && cerr != nil && !errors.Is(cerr, context.Canceled) {
			err = cerr
		}
	}
	m.revoke(ctx, lease)
	m.log.Info("leadership ended", "reason", why)
	return err
}

// holdLease renews the lease and watches the leader key until the term
// ends; it says why it ended.
func (m *Manager) holdLease(ctx context.Context, lease store.LeaseID, rev int64, done <-chan error) (string, error) {
	st := m.cfg.Store
	ttl := time.Duration(m.leaseSeconds()) * time.Second
	tick := time.NewTicker(max(ttl/3, 10*time.Millisecond))
	defer tick.Stop()
	lastRenew := time.Now()
	wch := st.Watch(ctx, store.LeaderKey, rev+1)
	for {
		select {
		case <-ctx.Done():
			return "shutdown", nil
		case err := <-done:
			if err != nil && ctx.Err() == nil {
				return "controllers stopped", fmt.Errorf("controller: controllers failed: %w", err)
			}
			return "controllers stopped", nil
		case <-tick.C:
			err := st.KeepAlive(ctx, lease)
			switch {
			case err == nil:
				lastRenew = time.Now()
			case errors.Is(err, store.ErrNoLease):
				return "lease expired", nil
			case time.Since(lastRenew) > ttl:
				return "lease not renewed within its TTL", fmt.Errorf("controller: keep leader lease alive: %w", err)
			}
		case resp, ok := <-wch:
			if !ok {
				return "shutdown", nil
			}
			if lost := leaderKeyLost(resp, rev); lost {
				return "leader key changed", nil
			}
			if resp.Err != nil {
				// Re-check directly and watch again.
				kv, err := st.Get(ctx, store.LeaderKey)
				if err != nil || kv.ModRev != rev {
					return "leader key changed", nil
				}
				wch = st.Watch(ctx, store.LeaderKey, kv.ModRev+1)
			}
		}
	}
}

func leaderKeyLost(resp store.WatchResponse, rev int64) bool {
	for _, ev := range resp.Events {
		if ev.KV.Key != store.LeaderKey {
			continue
		}
		if ev.Type == store.EventDelete || ev.KV.ModRev != rev {
			return true
		}
	}
	return false
}

// Probing a leader's server (Config.LeaderGone): how often, and how many
// answers "gone" in a row end its term.
const (
	leaderProbeEvery   = 200 * time.Millisecond
	leaderProbeStrikes = 2
)

// deposeIfGone ends the term of leader (its key at rev) once its server
// is gone for sure, by deleting the leader key: every follower's watch
// then sees it vanish and campaigns. It returns when ctx ends.
func (m *Manager) deposeIfGone(ctx context.Context, leader string, rev int64) {
	tick := time.NewTicker(leaderProbeEvery)
	defer tick.Stop()
	strikes := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !m.cfg.LeaderGone(ctx, leader) {
			strikes = 0
			continue
		}
		if strikes++; strikes < leaderProbeStrikes {
			continue
		}
		// A proposal made while raft elects (the gone server may have led
		// it) is dropped, and the call would wait out its deadline: try
		// again soon instead.
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		ok, _, err := m.cfg.Store.Txn(dctx, []store.Cond{store.IfRev(store.LeaderKey, rev)}, []store.Op{store.Delete(store.LeaderKey)})
		cancel()
		if err == nil {
			if ok {
				m.log.Warn("the leader's server is gone: its term ends now, without waiting for its lease", "leader", leader)
			}
			return
		}
		m.log.Debug("depose a gone leader", "leader", leader, "err", err)
	}
}

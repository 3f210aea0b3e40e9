package etcdstore

import (
	"context"
	"strings"
	"sync/atomic"

	"go.etcd.io/etcd/server/v3/etcdserver"
	"google.golang.org/grpc"
)

// memberRev answers Revision on an embedded member: the revision as of
// some moment after the call, at least that of every write acknowledged
// before it (a consistent read's revision: internal/server's list
// first page and GET vm ask it through the watch cache).
//
// etcd's way is a linearizable read: a read index through raft, then a
// wait until the member has applied it. On a member that is the
// cluster's only member (and so its only voter and its leader), the
// member's applied revision is already that answer, read in process
// without either:
//
//   - etcd acknowledges a write only once the member that took it has
//     applied it (the request waits for its apply), and the revision of
//     the member's store (KV().Rev) includes every write applied;
//   - a learner acknowledges no write (etcd refuses it every write), so
//     with no other member, every write acknowledged since this member
//     applied the state it checks was taken and applied here;
//   - the one voter of a raft group leads every term it is in; a leader
//     that loses leadership never leads that term again, so the same
//     term seen as leader at the grant and now means leader throughout.
//
// What that leaves are writes acknowledged before the member's applied
// state knew it was alone: by this member before a restart (committed
// in its WAL, maybe not yet applied after it), or by another voter that
// was removed (it may have applied, and acknowledged, entries this
// member committed but had not applied yet when it applied the
// removal). One read index settles both: begun once the member is seen
// alone, it returns the commit index of its term (past every entry of a
// previous incarnation, past every entry a removed member could have
// been told was committed) and waits until it is applied. So the fast
// path opens only after such a read (a grant), and only while nothing
// it rests on changed since (same term, still leader, still alone, no
// membership change proposed to the member or seen since: epoch). Anything else
// takes the read index, as before: a member of several, one whose
// membership changes, a member just started (until its first read
// index), a client of an external cluster (no memberRev at all).
type memberRev struct {
	self  uint64
	state func() memberState // the member's view now (serverState)
	rev   func() int64       // the member's applied revision (KV().Rev)
	// readIndex is etcd's linearizable read (LinearizableReadNotify).
	readIndex func(ctx context.Context) error

	// epoch changes when a membership change is proposed to the member
	// and when it returned (membershipInterceptor), and every time the
	// member is seen not alone: a grant of an older epoch is void.
	epoch atomic.Uint64
	grant atomic.Pointer[revGrant]
	// readIndexes counts the reads that went through the read index
	// (tests, benchmarks).
	readIndexes atomic.Int64
	// viaReadIndex sends every read through the read index, as before
	// the fast path (benchmarks compare both).
	viaReadIndex atomic.Bool
}

// memberState is what the fast path rests on, as the member sees it.
type memberState struct {
	leader   uint64 // raft leader (0: none)
	term     uint64 // term of the last applied entry
	alone    bool   // the only member, a voter: no other voter, no learner
	stopping bool   // the member is stopping or stopped (its read index says so)
}

// revGrant says a read index begun and ended with the member alone and
// leading term, in epoch, has been applied.
type revGrant struct{ term, epoch uint64 }

// serverState reads srv's view: its leader, the term of its last
// applied entry, and whether the membership it applied is it alone.
func serverState(srv *etcdserver.EtcdServer) func() memberState {
	self := uint64(srv.MemberID())
	return func() memberState {
		ms := srv.Cluster().Members()
		alone := len(ms) == 1 && uint64(ms[0].ID) == self && !ms[0].IsLearner
		st := memberState{leader: uint64(srv.Leader()), term: srv.Term(), alone: alone}
		select {
		case <-srv.StoppingNotify():
			st.stopping = true
		default:
		}
		return st
	}
}

// fast reports whether st and the grant g (nil: none) in the current
// epoch let the applied revision answer without a read index.
func fast(self uint64, st memberState, g *revGrant, epoch uint64) bool {
	return st.alone && !st.stopping && st.leader == self && g != nil && g.term == st.term && g.epoch == epoch
}

// read returns the revision for a consistent read.
func (m *memberRev) read(ctx context.Context) (int64, error) {
	epoch := m.epoch.Load()
	st := m.state()
	if !st.alone {
		// a grant of this epoch must not outlive a membership seen
		// changing, even if it changes back before the next read
		m.epoch.CompareAndSwap(epoch, epoch+1)
	} else if !m.viaReadIndex.Load() && fast(m.self, st, m.grant.Load(), epoch) {
		return m.rev(), nil
	}
	m.readIndexes.Add(1)
	if err := m.readIndex(ctx); err != nil {
		return 0, err
	}
	rev := m.rev()
	if st.alone && st.leader == m.self && m.state() == st && m.epoch.Load() == epoch {
		m.grant.Store(&revGrant{term: st.term, epoch: epoch})
	}
	return rev, nil
}

// membershipChange voids the grant for a change of membership; call it
// before the change is proposed and again once it returned (done).
func (m *memberRev) membershipChange() (done func()) {
	m.epoch.Add(1)
	return func() { m.epoch.Add(1) }
}

// membershipInterceptor is a unary interceptor of the member's gRPC
// server: a call of etcd's Cluster service other than the member list
// (add, promote, remove, update) is a membership change, in flight
// from before its proposal until it returned.
//
// While the member is the only voter, another member can only come by
// an add, and an add only this way: a learner serves no Cluster call,
// and etcd 3.7 has no other API that adds a member (the peers' handler
// only forwards promotions from a voter). So a change can not slip
// between two reads unseen: a member added, promoted and removed again
// before the next read voids the grant all the same, and a new grant
// needs the member seen alone, after the removal is applied. A change
// whose call returned before it was applied (its caller gave up) shows
// in the membership once applied.
func (m *memberRev) membershipInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !strings.HasPrefix(info.FullMethod, "/etcdserverpb.Cluster/") || info.FullMethod == "/etcdserverpb.Cluster/MemberList" {
		return handler(ctx, req)
	}
	defer m.membershipChange()()
	return handler(ctx, req)
}

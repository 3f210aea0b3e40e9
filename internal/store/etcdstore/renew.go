package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vpool/vpool/internal/store"
)

// renewers renews leases over a few long-lived LeaseKeepAlive streams
// shared by every caller of KeepAlive. clientv3's KeepAliveOnce opens a
// stream per call (about 150 µs of CPU on both ends); a server renewing
// the leases of 10,000 hosts every few seconds cannot afford that, while
// a request on an open stream costs about 25 µs. etcd answers the
// requests of one stream one after the other (a renewal may wait for a
// leadership check under load), so several streams run side by side.
type renewers struct {
	cli  *clientv3.Client
	next atomic.Uint32
	all  []*renewer
	// route sends the streams to the raft leader (leader.go); nil for a
	// client of an external cluster, whose streams stay on cli.
	route *leaderRoute
	// viaLeader turns route off when false (benchmarks compare both).
	viaLeader atomic.Bool
	// answeredBy is the member that answered the last renewal (tests).
	answeredBy atomic.Uint64
}

// renewStreams is how many keep-alive streams a store keeps open.
const renewStreams = 8

func newRenewers(cli *clientv3.Client) *renewers {
	rs := &renewers{cli: cli}
	for range renewStreams {
		rs.all = append(rs.all, &renewer{rs: rs})
	}
	return rs
}

// routeVia sends renewals to the raft leader from now on.
func (rs *renewers) routeVia(lr *leaderRoute) {
	rs.route = lr
	rs.viaLeader.Store(true)
}

// pick returns the member the streams go to now and its client.
func (rs *renewers) pick() (uint64, *clientv3.Client) {
	if rs.route == nil || !rs.viaLeader.Load() {
		return 0, rs.cli
	}
	return rs.route.pick(rs.cli)
}

// keepAlive renews id on the next stream; a renewal lost because its
// stream broke under it (etcd ends a stream on any error of any of its
// renewals; the leader's member stops) is tried once more on another.
//
// A renewal answered "not found" is believed only once the lease's time
// to live agrees: around a leader change etcd can answer a renewal
// before the new leader has applied the grant (etcd-io/etcd#13915; a
// three-member contract test saw a lease of 2 s "not found" 0.6 s after
// its last renewal), and a host would then drop a lease it still holds.
func (rs *renewers) keepAlive(ctx context.Context, id int64) error {
	err := rs.all[rs.next.Add(1)%uint32(len(rs.all))].keepAlive(ctx, id)
	if errors.Is(err, errStreamEnded) && ctx.Err() == nil {
		err = rs.all[rs.next.Add(1)%uint32(len(rs.all))].keepAlive(ctx, id)
	}
	if errors.Is(err, store.ErrNoLease) && ctx.Err() == nil {
		if ttl, terr := rs.cli.TimeToLive(ctx, clientv3.LeaseID(id)); terr == nil && ttl.TTL > 0 {
			err = rs.all[rs.next.Add(1)%uint32(len(rs.all))].keepAlive(ctx, id)
		}
	}
	return err
}

func (rs *renewers) close() {
	for _, r := range rs.all {
		r.close()
	}
	if rs.route != nil {
		rs.route.close()
	}
}

// renewer is one keep-alive slot: a stream to the member renewals go to.
// When that member changes, the stream is retired (it answers what was
// sent on it, then closes) and the next renewal opens one to the new
// member, so that no renewal in flight is lost to a leader change.
type renewer struct {
	rs *renewers

	mu  sync.Mutex
	cur *kaStream
}

// kaStream is one LeaseKeepAlive stream: etcd answers its requests in
// order, so each answer goes to the oldest waiter.
type kaStream struct {
	st      pb.Lease_LeaseKeepAliveClient
	cancel  context.CancelFunc
	member  uint64             // whom it goes to (0 or the local member: the store's own client)
	waiters []chan renewResult // in the order their requests were sent
	retired bool               // no new requests; closes when waiters is empty
}

type renewResult struct {
	ttl    int64
	member uint64
	err    error
}

// errStreamEnded fails the waiters of a stream that broke.
var errStreamEnded = errors.New("etcdstore: lease keep-alive stream ended")

// keepAlive renews lease id once: nil, store.ErrNoLease when the lease
// has expired, or the stream's error.
func (r *renewer) keepAlive(ctx context.Context, id int64) error {
	ch := make(chan renewResult, 1)
	if err := r.send(id, ch); err != nil {
		return err
	}
	select {
	case res := <-ch:
		if res.err != nil {
			return res.err
		}
		r.rs.answeredBy.Store(res.member)
		if res.ttl <= 0 {
			return fmt.Errorf("lease %x: %w", id, store.ErrNoLease)
		}
		return nil
	case <-ctx.Done():
		// the answer still arrives and goes to this (buffered) channel
		return ctx.Err()
	}
}

// send queues a waiter and sends the request, opening a stream to the
// member renewals go to if there is none (or retiring the one to a
// member they no longer go to); both happen under mu so that waiters
// and requests stay in the same order.
func (r *renewer) send(id int64, ch chan renewResult) error {
	member, cli := r.rs.pick()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur != nil && r.cur.member != member {
		r.retireLocked(r.cur)
	}
	if r.cur == nil {
		s, err := r.open(cli, member)
		if err != nil && r.rs.route != nil && member != r.rs.route.self {
			r.rs.route.failed(member)
			member, cli = r.rs.route.self, r.rs.cli
			s, err = r.open(cli, member)
		}
		if err != nil {
			return err
		}
		r.cur = s
		go r.recv(s)
	}
	if err := r.cur.st.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
		r.breakLocked(r.cur, err)
		return fmt.Errorf("%w: %w", errStreamEnded, err)
	}
	r.cur.waiters = append(r.cur.waiters, ch)
	return nil
}

// remoteOpenTimeout bounds the open of a stream to another member:
// etcd's client waits for a connection before it opens a stream, and a
// leader that cannot be reached would hold this renewer's lock until
// then.
const remoteOpenTimeout = time.Second

// open opens a keep-alive stream on cli, to member; a remote one (not
// the store's own client) gives up after remoteOpenTimeout.
func (r *renewer) open(cli *clientv3.Client, member uint64) (*kaStream, error) {
	sctx, cancel := context.WithCancel(context.Background())
	var timer *time.Timer
	if cli != r.rs.cli {
		timer = time.AfterFunc(remoteOpenTimeout, cancel)
	}
	st, err := clientv3.RetryLeaseClient(cli).LeaseKeepAlive(clientv3.WithRequireLeader(sctx))
	if timer != nil && !timer.Stop() && err == nil {
		err = fmt.Errorf("etcdstore: open a keep-alive stream to member %x: no connection in %v", member, remoteOpenTimeout)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return &kaStream{st: st, cancel: cancel, member: member}, nil
}

// recv hands each answer of s to its oldest waiter until s breaks, or
// until it is retired and has answered everything sent on it.
func (r *renewer) recv(s *kaStream) {
	for {
		resp, err := s.st.Recv()
		r.mu.Lock()
		if err != nil {
			r.breakLocked(s, err)
			r.mu.Unlock()
			return
		}
		if len(s.waiters) > 0 {
			ch := s.waiters[0]
			s.waiters[0] = nil
			s.waiters = s.waiters[1:]
			var by uint64
			if resp.Header != nil {
				by = resp.Header.MemberId
			}
			ch <- renewResult{ttl: resp.TTL, member: by}
		}
		done := s.retired && len(s.waiters) == 0
		if done {
			s.cancel()
		}
		r.mu.Unlock()
		if done {
			return
		}
	}
}

// retireLocked takes s out of use: it closes once its waiters have their
// answers.
func (r *renewer) retireLocked(s *kaStream) {
	if r.cur == s {
		r.cur = nil
	}
	s.retired = true
	if len(s.waiters) == 0 {
		s.cancel()
	}
}

// breakLocked drops s and fails its waiters; the next call opens a new
// stream. A stream to the leader that broke of itself sends renewals
// to the local member for a while.
func (r *renewer) breakLocked(s *kaStream, err error) {
	if r.cur == s {
		r.cur = nil
	}
	s.cancel()
	if (len(s.waiters) > 0 || !s.retired) && r.rs.route != nil && !errors.Is(err, store.ErrClosed) {
		r.rs.route.failed(s.member)
	}
	for _, ch := range s.waiters {
		ch <- renewResult{err: fmt.Errorf("%w: %w", errStreamEnded, err)}
	}
	s.waiters, s.retired = nil, true
}

// close ends the stream.
func (r *renewer) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cur != nil {
		r.breakLocked(r.cur, store.ErrClosed)
	}
}

package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

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
}

// renewStreams is how many keep-alive streams a store keeps open.
const renewStreams = 8

func newRenewers(cli *clientv3.Client) *renewers {
	rs := &renewers{cli: cli}
	for range renewStreams {
		rs.all = append(rs.all, &renewer{cli: cli})
	}
	return rs
}

// keepAlive renews id on the next stream; a renewal lost because its
// stream broke under it (etcd ends a stream on any error of any of its
// renewals) is tried once more on another.
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
}

// renewer is one keep-alive stream: etcd answers its requests in order,
// so each answer goes to the oldest waiter.
type renewer struct {
	cli *clientv3.Client

	mu      sync.Mutex
	stream  pb.Lease_LeaseKeepAliveClient
	cancel  context.CancelFunc
	waiters []chan renewResult // in the order their requests were sent
}

type renewResult struct {
	ttl int64
	err error
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
		if res.ttl <= 0 {
			return fmt.Errorf("lease %x: %w", id, store.ErrNoLease)
		}
		return nil
	case <-ctx.Done():
		// the answer still arrives and goes to this (buffered) channel
		return ctx.Err()
	}
}

// send queues a waiter and sends the request, opening the stream if
// there is none; both happen under mu so that waiters and requests stay
// in the same order.
func (r *renewer) send(id int64, ch chan renewResult) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stream == nil {
		sctx, cancel := context.WithCancel(context.Background())
		st, err := clientv3.RetryLeaseClient(r.cli).LeaseKeepAlive(clientv3.WithRequireLeader(sctx))
		if err != nil {
			cancel()
			return err
		}
		r.stream, r.cancel = st, cancel
		go r.recv(st)
	}
	if err := r.stream.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
		r.breakLocked(r.stream, err)
		return err
	}
	r.waiters = append(r.waiters, ch)
	return nil
}

// recv hands each answer of st to the oldest waiter until st breaks.
func (r *renewer) recv(st pb.Lease_LeaseKeepAliveClient) {
	for {
		resp, err := st.Recv()
		r.mu.Lock()
		if err != nil {
			r.breakLocked(st, err)
			r.mu.Unlock()
			return
		}
		if r.stream == st && len(r.waiters) > 0 {
			ch := r.waiters[0]
			r.waiters[0] = nil
			r.waiters = r.waiters[1:]
			ch <- renewResult{ttl: resp.TTL}
		}
		r.mu.Unlock()
	}
}

// breakLocked drops st (if it is still the current stream) and fails its
// waiters; the next call opens a new stream.
func (r *renewer) breakLocked(st pb.Lease_LeaseKeepAliveClient, err error) {
	if r.stream != st {
		return
	}
	r.cancel()
	r.stream, r.cancel = nil, nil
	for _, ch := range r.waiters {
		ch <- renewResult{err: fmt.Errorf("%w: %w", errStreamEnded, err)}
	}
	r.waiters = nil
}

// close ends the stream.
func (r *renewer) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stream != nil {
		r.breakLocked(r.stream, store.ErrClosed)
	}
}

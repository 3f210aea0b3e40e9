package etcdstore

import (
	"crypto/tls"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// leaderRoute sends an embedded member's lease renewals to the member
// that leads raft. etcd renews leases on the leader only: a follower
// forwards each renewal it gets to the leader as an HTTP request of its
// own over the peer connection (EtcdServer.LeaseRenew, leasehttp), about
// ten times the CPU of a message on an open keep-alive stream, so that
// with three members two servers in three renewed their hosts' leases
// that way. Renewing on the leader's own stream makes a renewal one
// gRPC message wherever the server runs.
//
// The leader is read in process from the embedded member (no request);
// when there is none, it is this member, its client URLs are not known
// yet, or a stream to it just failed, renewals go to the local member
// as before, which forwards them.
type leaderRoute struct {
	self   uint64
	leader func() (id uint64, clientURLs []string)
	tls    *tls.Config
	now    func() time.Time

	mu         sync.Mutex
	clients    map[uint64]*clientv3.Client
	avoid      uint64
	avoidUntil time.Time
	closed     bool
}

// avoidFor is how long renewals stay on the local member after a
// stream to the leader failed to open or broke: its leadership is
// probably moving (renewals follow a new leader at once, whatever this
// says), or this server cannot reach its client URL, and each try of an
// unreachable one holds a stream's renewals up to remoteOpenTimeout.
const avoidFor = 10 * time.Second

func newLeaderRoute(self uint64, leader func() (uint64, []string), tlsCfg *tls.Config) *leaderRoute {
	return &leaderRoute{self: self, leader: leader, tls: tlsCfg, now: time.Now, clients: map[uint64]*clientv3.Client{}}
}

// pick returns the member renewals go to now and a client of it (local
// when it is this member).
func (lr *leaderRoute) pick(local *clientv3.Client) (uint64, *clientv3.Client) {
	id, urls := lr.leader()
	if id == 0 || id == lr.self || len(urls) == 0 {
		return lr.self, local
	}
	lr.mu.Lock()
	defer lr.mu.Unlock()
	if lr.closed || (id == lr.avoid && lr.now().Before(lr.avoidUntil)) {
		return lr.self, local
	}
	if c := lr.clients[id]; c != nil && slices.Equal(c.Endpoints(), urls) {
		return id, c
	}
	// clientv3.New does not dial: a member that does not answer fails
	// the stream's open or its first message, and failed moves renewals
	// back to the local member.
	c, err := clientv3.New(clientv3.Config{
		Endpoints:            urls,
		TLS:                  lr.tls,
		DialTimeout:          2 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
	})
	if err != nil {
		lr.avoid, lr.avoidUntil = id, lr.now().Add(avoidFor)
		return lr.self, local
	}
	if old := lr.clients[id]; old != nil {
		_ = old.Close()
	}
	lr.clients[id] = c
	return id, c
}

// failed keeps renewals off member id for a while.
func (lr *leaderRoute) failed(id uint64) {
	if id == lr.self {
		return
	}
	lr.mu.Lock()
	lr.avoid, lr.avoidUntil = id, lr.now().Add(avoidFor)
	lr.mu.Unlock()
}

func (lr *leaderRoute) close() {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	lr.closed = true
	for id, c := range lr.clients {
		_ = c.Close()
		delete(lr.clients, id)
	}
}

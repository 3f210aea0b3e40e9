package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vpool/vpool/internal/store"
)

// Member is the embedded member of this process: its name (the
// server's) and its ID in the cluster.
type Member struct {
	Name string
	ID   uint64
}

// Sentinel errors of membership changes (the store package's, so that
// callers need not import etcd).
var (
	ErrNotEmbedded    = store.ErrNotEmbedded
	ErrMembershipBusy = store.ErrMembershipBusy
	ErrNoSuchMember   = store.ErrNoSuchMember
)

// Self is the embedded member's name and ID (zero for a client of an
// external cluster).
func (s *Store) Self() Member { return s.member }

// Members lists the cluster's members, sorted by name (members that have
// not started yet, which have no name, last).
func (s *Store) Members(ctx context.Context) ([]store.Member, error) {
	if err := s.checkOpen(ctx, "member list"); err != nil {
		return nil, err
	}
	resp, err := s.cli.MemberList(ctx)
	if err != nil {
		return nil, s.wrap("member list", err)
	}
	return toMembers(resp.Members), nil
}

func toMembers(ms []*etcdserverpb.Member) []store.Member {
	out := make([]store.Member, 0, len(ms))
	for _, m := range ms {
		out = append(out, store.Member{ID: m.ID, Name: m.Name, PeerURLs: slices.Clone(m.PeerURLs),
			ClientURLs: slices.Clone(m.ClientURLs), Learner: m.IsLearner})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if (out[i].Name == "") != (out[j].Name == "") {
			return out[j].Name == ""
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// AddLearner adds a member at peerURL that replicates without voting, so
// that adding it never costs the cluster its quorum, whether the new
// server starts or not; PromoteMember makes it a voter once it caught up.
// It returns the new member and the membership it belongs to: what the
// new member needs to start (InitialCluster).
func (s *Store) AddLearner(ctx context.Context, peerURL string) (store.Member, []store.Member, error) {
	if s.member.ID == 0 {
		return store.Member{}, nil, ErrNotEmbedded
	}
	if err := store.CheckPeerURL(peerURL); err != nil {
		return store.Member{}, nil, err
	}
	resp, err := s.cli.MemberAddAsLearner(ctx, []string{peerURL})
	if err != nil {
		if msg := err.Error(); strings.Contains(msg, "too many learner") || strings.Contains(msg, "unhealthy cluster") {
			return store.Member{}, nil, fmt.Errorf("%w: %v", ErrMembershipBusy, err)
		}
		return store.Member{}, nil, s.wrap("member add", err)
	}
	added := toMembers([]*etcdserverpb.Member{resp.Member})[0]
	return added, toMembers(resp.Members), nil
}

// PromoteMember makes a learner a voting member. etcd refuses while the
// learner lags behind the leader; callers retry.
func (s *Store) PromoteMember(ctx context.Context, id uint64) error {
	if s.member.ID == 0 {
		return ErrNotEmbedded
	}
	_, err := s.cli.MemberPromote(ctx, id)
	return s.wrap(fmt.Sprintf("member promote %x", id), err)
}

// RemoveMember removes a member. etcd refuses a removal that would leave
// the started members without a quorum. A removed member stops; its
// server then exits.
func (s *Store) RemoveMember(ctx context.Context, id uint64) error {
	if s.member.ID == 0 {
		return ErrNotEmbedded
	}
	_, err := s.cli.MemberRemove(ctx, id)
	if err != nil && strings.Contains(err.Error(), "member not found") {
		return fmt.Errorf("%w: %x", ErrNoSuchMember, id)
	}
	return s.wrap(fmt.Sprintf("member remove %x", id), err)
}

// RaftLeader is the ID of the member that leads raft now, as this
// process's member sees it (0: none).
func (s *Store) RaftLeader(ctx context.Context) (uint64, error) {
	if len(s.endpoints) == 0 {
		return 0, ErrNotEmbedded
	}
	st, err := s.cli.Status(ctx, s.endpoints[0])
	if err != nil {
		return 0, s.wrap("status", err)
	}
	return st.Leader, nil
}

// RaftTerm is the store's raft term as this process's member (or the
// first endpoint) sees it: it grows with every election, so a change says
// the store elected a leader since (host HA waits a fence timeout before
// a fence command then: renewals may have stalled in the election).
func (s *Store) RaftTerm(ctx context.Context) (uint64, error) {
	if len(s.endpoints) == 0 {
		return 0, ErrNotEmbedded
	}
	st, err := s.cli.Status(ctx, s.endpoints[0])
	if err != nil {
		return 0, s.wrap("status", err)
	}
	return st.RaftTerm, nil
}

// MemberGone reports whether the member called name is gone for sure: a
// dial of its peer URL is refused (the process that served it exited).
// A timeout, an unreachable network or an unknown member are no proof
// and answer false. The controllers use it to take over from a leader
// server that was killed without waiting out its lease.
func (s *Store) MemberGone(ctx context.Context, name string) bool {
	if s.member.ID == 0 || name == "" || name == s.member.Name {
		return false
	}
	peer := s.probe.peerURL(ctx, s, name)
	if peer == "" {
		return false
	}
	return s.probe.refused(ctx, s.localTLS.ClientCert, s.localTLS.ClientKey, s.localTLS.CACert, peer)
}

// peerProbe dials members' peer ports; it remembers their URLs.
type peerProbe struct {
	mu      sync.Mutex
	urls    map[string]string // member name → peer URL
	fetched time.Time
	tls     *tls.Config
}

// peerURL is the peer URL of member name, from a membership read at most
// every few seconds (serializable: answered while raft elects).
func (p *peerProbe) peerURL(ctx context.Context, s *Store, name string) string {
	p.mu.Lock()
	u, ok := p.urls[name]
	stale := time.Since(p.fetched) > 5*time.Second
	p.mu.Unlock()
	if ok || !stale {
		return u
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := s.cli.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return ""
	}
	urls := map[string]string{}
	for _, m := range resp.Members {
		if m.Name != "" && len(m.PeerURLs) > 0 {
			urls[m.Name] = m.PeerURLs[0]
		}
	}
	p.mu.Lock()
	p.urls, p.fetched = urls, time.Now()
	p.mu.Unlock()
	return urls[name]
}

// refused dials peer with the member's client certificate (a completed
// handshake leaves no warning in the peer's log) and reports whether the
// connection was refused.
func (p *peerProbe) refused(ctx context.Context, cert, key, ca, peer string) bool {
	u, err := url.Parse(peer)
	if err != nil {
		return false
	}
	p.mu.Lock()
	if p.tls == nil {
		if cfg, err := ClientTLS(ca, cert, key); err == nil {
			p.tls = cfg
		}
	}
	cfg := p.tls
	p.mu.Unlock()
	if cfg == nil {
		return false
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 500 * time.Millisecond}, Config: cfg}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err == nil {
		_ = conn.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// readTLSFile reads one file of the member's TLS material.
func readTLSFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: %w", err)
	}
	return b, nil
}

// JoinSecrets returns the embedded member's private CA (certificate and
// key, PEM): what a server joining the cluster needs to make its own
// member and client certificates.
func (s *Store) JoinSecrets() (caCert, caKey []byte, err error) {
	if s.localTLS == nil || s.member.ID == 0 {
		return nil, nil, ErrNotEmbedded
	}
	if caCert, err = readTLSFile(s.localTLS.CACert); err != nil {
		return nil, nil, err
	}
	if caKey, err = readTLSFile(s.localTLS.CAKey); err != nil {
		return nil, nil, err
	}
	return caCert, caKey, nil
}

// PromoteStarted promotes every learner that has started (it has a
// name) and returns the names it promoted. A learner still catching up
// is refused by etcd and left for the next call.
func (s *Store) PromoteStarted(ctx context.Context) ([]string, error) {
	ms, err := s.Members(ctx)
	if err != nil {
		return nil, err
	}
	var done []string
	for _, m := range ms {
		if !m.Learner || m.Name == "" {
			continue
		}
		if err := s.PromoteMember(ctx, m.ID); err != nil {
			if strings.Contains(err.Error(), "not in sync") || strings.Contains(err.Error(), "not ready") {
				continue
			}
			return done, err
		}
		done = append(done, m.Name)
	}
	return done, nil
}

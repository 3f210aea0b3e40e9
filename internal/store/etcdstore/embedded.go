package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"google.golang.org/grpc"

	"github.com/vpool/vpool/internal/pki"
)

// Defaults of Config.
const (
	DefaultName         = "vpool"
	DefaultClusterToken = "vpool"
	DefaultStartTimeout = 60 * time.Second
	// DefaultCompactionRetention is 10 minutes: every watch of a vpool
	// server (its view, the controllers' cache, the trust cache, the
	// network and balancer views, the backup long poll) lists afresh
	// when its start was compacted, and an hour of history (every version of every VM
	// created in it) was etcd's in-memory index and the database's
	// growth at 100,000 VMs (docs/scale.md, sixth round).
	DefaultCompactionRetention = 10 * time.Minute
	DefaultQuotaBackendBytes   = 4 << 30 // 4 GiB; etcd's own default is 2 GiB
	// EmbeddedMaxTxnOps is our member's cap on a transaction's
	// operations (etcd's default is 128): the placement gate commits
	// groups of up to about 250 placements in one transaction — at 58 a
	// group it was the limit of creates in batches (docs/scale.md, fifth
	// round). Every member of an embedded cluster is ours, so each has it.
	EmbeddedMaxTxnOps = 512
	// EmbeddedSnapshotCatchUpEntries is how many applied raft entries
	// our members keep in memory for a follower that lags (etcd's
	// SnapshotCatchUpEntries; one further behind is sent the database
	// as a snapshot instead). etcd's 5,000 is half a second of its peak
	// of about 10,000 small entries a second; vpool's entries are few
	// and large (a group of placements is one entry of tens to hundreds
	// of KB), and a burst of them stayed in memory until 5,000 more
	// pushed it out — at rest, hours: 265 MB of one server's live heap
	// at 10,000 hosts (docs/scale.md, eighth round). 1,000 entries
	// are still about 3 s of lag at the placing peak (about 300
	// transactions a second: 0.23 a VM at 1,300 VMs a second), six
	// times etcd's own margin.
	EmbeddedSnapshotCatchUpEntries = 1000
	defaultLocalURL                = "https://127.0.0.1:0"
	defaultPlainURL                = "http://127.0.0.1:0"
)

// Cluster states of Config.ClusterState.
const (
	ClusterStateNew      = "new"
	ClusterStateExisting = "existing"
)

// Config configures an embedded etcd member.
type Config struct {
	// DataDir holds the member's WAL and database. Required.
	DataDir string
	// Name of the member, unique in its cluster. Default DefaultName.
	Name string
	// ClientURL is where the member serves clients: "https://host:port",
	// or with Plaintext "http://host:port" or "unix:///abs/path.sock".
	// Port 0 picks a free port. Default "https://127.0.0.1:0" (with
	// Plaintext "http://127.0.0.1:0").
	ClientURL string
	// PeerURL is where the member talks raft to its peers; same forms and
	// default as ClientURL.
	PeerURL string
	// TLSDir holds the member's TLS material (pki.EnsureLocalTLS): a
	// private CA, the member's certificate and the client certificate of
	// this process's store. Both ports then take only clients with a
	// certificate of that CA (mutual TLS), so a local user who reaches
	// the loopback port can neither read nor write. Members of one
	// cluster share the CA (copy ca.crt and ca.key). Default DataDir/tls.
	TLSDir string
	// Plaintext serves both ports without TLS or client authentication:
	// anyone who reaches them owns the store. For tests whose other
	// processes connect without certificates (etcdtest) only.
	Plaintext bool
	// InitialCluster is "name1=peerURL1,name2=peerURL2,..." when the
	// member starts a new cluster of several members or joins one.
	// Default: this member alone.
	InitialCluster string
	// ClusterState is ClusterStateNew (default) or ClusterStateExisting
	// (joining a cluster that already runs; add the member first).
	ClusterState string
	// ClusterToken keeps separate clusters from talking to each other.
	// Default DefaultClusterToken.
	ClusterToken string
	// Logger receives etcd's warnings and errors (all levels with Debug).
	// Nil discards them.
	Logger *slog.Logger
	// Debug passes etcd's info and debug logs to Logger too.
	Debug bool
	// StartTimeout bounds the wait for the member to be ready (a new
	// multi-member cluster is ready when a quorum has started).
	// Default DefaultStartTimeout.
	StartTimeout time.Duration
	// CompactionRetention is how much history etcd keeps for watches to
	// resume from (periodic compaction). Default DefaultCompactionRetention.
	CompactionRetention time.Duration
	// QuotaBackendBytes caps the database size. Default
	// DefaultQuotaBackendBytes.
	QuotaBackendBytes int64
	// HeartbeatInterval and ElectionTimeout tune raft; zero keeps etcd's
	// defaults (100 ms and 1 s). Leases can not be shorter than about 1.5
	// election timeouts.
	HeartbeatInterval time.Duration
	ElectionTimeout   time.Duration
	// UnsafeNoFsync skips fsync: for tests and benchmarks only, a crash
	// of the machine may then lose acknowledged writes.
	UnsafeNoFsync bool
	// DefragMinFree: the member defragments its database once that many
	// bytes of the file are free pages and at least as many as are in
	// use (defrag.go). Default DefaultDefragMinFree; negative: never.
	// DefragCheckInterval is how often it looks. Default
	// DefaultDefragCheckInterval.
	DefragMinFree       int64
	DefragCheckInterval time.Duration

	// dialOpts are added to the gRPC dial of the member's client (tests
	// wrap the client's streams: export_test.go).
	dialOpts []grpc.DialOption
}

func (c *Config) setDefaults() {
	if c.Name == "" {
		c.Name = DefaultName
	}
	def := defaultLocalURL
	if c.Plaintext {
		def = defaultPlainURL
	}
	if c.ClientURL == "" {
		c.ClientURL = def
	}
	if c.PeerURL == "" {
		c.PeerURL = def
	}
	if c.TLSDir == "" {
		c.TLSDir = filepath.Join(c.DataDir, "tls")
	}
	if c.ClusterState == "" {
		c.ClusterState = ClusterStateNew
	}
	if c.ClusterToken == "" {
		c.ClusterToken = DefaultClusterToken
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = DefaultStartTimeout
	}
	if c.CompactionRetention <= 0 {
		c.CompactionRetention = DefaultCompactionRetention
	}
	if c.QuotaBackendBytes <= 0 {
		c.QuotaBackendBytes = DefaultQuotaBackendBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.DefragMinFree == 0 {
		c.DefragMinFree = DefaultDefragMinFree
	}
	if c.DefragCheckInterval <= 0 {
		c.DefragCheckInterval = DefaultDefragCheckInterval
	}
}

// StartEmbedded starts an etcd member in this process (NewConfig →
// StartEtcd → ReadyNotify) and returns a Store connected to it. Close
// closes the client and stops the member. When a URL asks for port 0,
// a free port is picked and the start is retried if another process
// takes it first.
func StartEmbedded(ctx context.Context, c Config) (*Store, error) {
	if c.DataDir == "" {
		return nil, errors.New("etcdstore: start: Config.DataDir is required")
	}
	c.setDefaults()
	// etcd wants its data directory private, and says so at every start.
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdstore: start: %w", err)
	}
	if err := os.Chmod(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdstore: start: %w", err)
	}
	var lt *pki.LocalTLS
	if !c.Plaintext {
		var err error
		if lt, err = localTLS(c); err != nil {
			return nil, fmt.Errorf("etcdstore: start: %w", err)
		}
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		s, retry, err := startOnce(ctx, c, lt)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !retry {
			break
		}
	}
	return nil, fmt.Errorf("etcdstore: start member %s: %w", c.Name, lastErr)
}

// startOnce makes one attempt; retry says whether a fresh pick of free
// ports may succeed.
func startOnce(ctx context.Context, c Config, lt *pki.LocalTLS) (s *Store, retry bool, err error) {
	clientURL, pickedC, err := resolvePort(c.ClientURL, lt != nil)
	if err != nil {
		return nil, false, err
	}
	peerURL, pickedP, err := resolvePort(c.PeerURL, lt != nil)
	if err != nil {
		return nil, false, err
	}
	stopping := new(atomic.Bool)
	cfg, err := buildConfig(c, clientURL, peerURL, lt, stopping)
	if err != nil {
		return nil, false, err
	}
	// every membership change proposed to the member passes here
	// (readrev.go); the rest of mr is filled in once it runs
	mr := &memberRev{}
	cfg.GRPCAdditionalServerOptions = append(cfg.GRPCAdditionalServerOptions, grpc.ChainUnaryInterceptor(mr.membershipInterceptor))
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, (pickedC || pickedP) && errors.Is(err, syscall.EADDRINUSE), err
	}
	stop := func() { stopping.Store(true); e.Close() }
	deadline := time.Now().Add(c.StartTimeout)
	if err := waitReady(ctx, e, c.StartTimeout); err != nil {
		stopUnready(stop)
		return nil, false, err
	}
	// A joining member starts as a learner, which serves no client:
	// wait until a server of the cluster has promoted it.
	if err := waitVoter(ctx, e, time.Until(deadline)); err != nil {
		stopUnready(stop)
		return nil, false, err
	}
	endpoints := []string{clientURL.String()}
	var tlsCfg *tls.Config
	if lt != nil {
		if tlsCfg, err = ClientTLS(lt.CACert, lt.ClientCert, lt.ClientKey); err != nil {
			stop()
			return nil, false, err
		}
	}
	s, err = newClientStore(ctx, ClientConfig{Endpoints: endpoints, TLS: tlsCfg, dialOpts: c.dialOpts})
	if err != nil {
		stop()
		return nil, false, fmt.Errorf("connect to embedded member: %w", err)
	}
	s.stopServer = stop
	s.localTLS = lt
	s.member = Member{Name: c.Name, ID: uint64(e.Server.MemberID())}
	s.stopped = e.Server.StopNotify()
	srv := e.Server
	s.db = serverDB{srv}
	go defragLoop(s.db, c.DefragMinFree, c.DefragCheckInterval, s.stopped, stopping, c.Logger.With("component", "etcdstore", "member", c.Name))
	s.srv = srv
	mr.self, mr.state, mr.rev, mr.readIndex = s.member.ID, serverState(srv), func() int64 { return srv.KV().Rev() }, srv.LinearizableReadNotify
	s.memberRev = mr
	s.localRev = s.memberRev.read
	s.local = &memberWatch{kv: srv.Watchable(), leader: func() bool { return srv.Leader() != 0 },
		election: time.Duration(cfg.ElectionMs) * time.Millisecond}
	s.localGet = func(ctx context.Context, key string, atLeast int64) (*mvccpb.KeyValue, bool, error) {
		kv := srv.KV()
		if kv.Rev() < atLeast {
			return nil, false, nil
		}
		res, err := kv.Range(ctx, []byte(key), nil, mvcc.RangeOptions{Limit: 1})
		if err != nil {
			return nil, false, err
		}
		if len(res.KVs) == 0 {
			return nil, true, nil
		}
		return res.KVs[0], true, nil
	}
	s.renew.routeVia(newLeaderRoute(s.member.ID, func() (uint64, []string) {
		lead := srv.Leader()
		if lead == 0 {
			return 0, nil
		}
		if m := srv.Cluster().Member(lead); m != nil {
			return uint64(lead), m.ClientURLs
		}
		return uint64(lead), nil
	}, tlsCfg))
	if err := s.adoptPeerURL(ctx, peerURL.String(), c.Logger); err != nil {
		_ = s.Close()
		return nil, false, err
	}
	return s, false, nil
}

// MemberStopped is closed when the embedded member stops: on Close, or
// of its own accord (removed from its cluster, a fatal error). Nil for a
// client of an external cluster (it never fires).
func (s *Store) MemberStopped() <-chan struct{} { return s.stopped }

// unreadyStopWait bounds the stop of a member that never became ready:
// etcd's Close waits for the member to publish itself, which needs the
// quorum it could not find.
const unreadyStopWait = 5 * time.Second

// stopUnready stops a member that did not start, giving up after
// unreadyStopWait (the caller is failing anyway, and its process will
// exit).
func stopUnready(stop func()) {
	done := make(chan struct{})
	go func() { defer close(done); stop() }()
	t := time.NewTimer(unreadyStopWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// waitVoter waits until the member is no learner, within timeout.
func waitVoter(ctx context.Context, e *embed.Etcd, timeout time.Duration) error {
	t := time.NewTimer(max(timeout, 0))
	defer t.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for e.Server.IsLearner() {
		select {
		case <-tick.C:
		case err := <-e.Err():
			return fmt.Errorf("member failed while waiting to be promoted: %w", err)
		case <-t.C:
			return errors.New("member still a learner: no server of the cluster promoted it (is the cluster's leader server running?)")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// adoptPeerURL records the peer URL the member serves in the membership
// when the member is alone (a single server started again with another
// --peer-url, or the default free port): the address a joining server
// then dials. A member of several can not move alone; it says so.
func (s *Store) adoptPeerURL(ctx context.Context, peerURL string, log *slog.Logger) error {
	ms, err := s.Members(ctx)
	if err != nil {
		return fmt.Errorf("read membership: %w", err)
	}
	for _, m := range ms {
		if m.ID != s.member.ID || slices.Equal(m.PeerURLs, []string{peerURL}) {
			continue
		}
		if len(ms) > 1 {
			log.Warn("this member's peer URL differs from the one its cluster knows; the other members cannot reach it",
				"serves", peerURL, "known", m.PeerURLs)
			return nil
		}
		if _, err := s.cli.MemberUpdate(ctx, m.ID, []string{peerURL}); err != nil {
			return fmt.Errorf("update peer URL: %w", err)
		}
	}
	return nil
}

// localTLS makes the member's TLS material, for the names its URLs use.
func localTLS(c Config) (*pki.LocalTLS, error) {
	var names []string
	for _, raw := range []string{c.ClientURL, c.PeerURL} {
		if u, err := url.Parse(raw); err == nil && u.Hostname() != "" {
			names = append(names, u.Hostname())
		}
	}
	lt, err := pki.EnsureLocalTLS(c.TLSDir, c.Name, names, time.Now())
	if err != nil {
		return nil, err
	}
	return &lt, nil
}

func waitReady(ctx context.Context, e *embed.Etcd, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("member failed while starting: %w", err)
	case <-t.C:
		return fmt.Errorf("member not ready after %v (is a quorum of the cluster up?)", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func buildConfig(c Config, clientURL, peerURL *url.URL, lt *pki.LocalTLS, stopping *atomic.Bool) (*embed.Config, error) {
	cfg := embed.NewConfig()
	if lt != nil {
		info := transport.TLSInfo{CertFile: lt.MemberCert, KeyFile: lt.MemberKey, TrustedCAFile: lt.CACert, ClientCertAuth: true}
		cfg.ClientTLSInfo, cfg.PeerTLSInfo = info, info
	}
	cfg.Name = c.Name
	cfg.Dir = c.DataDir
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = c.InitialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.InitialClusterFromName(c.Name)
	}
	cfg.ClusterState = c.ClusterState
	cfg.InitialClusterToken = c.ClusterToken
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = c.CompactionRetention.String()
	cfg.QuotaBackendBytes = c.QuotaBackendBytes
	cfg.UnsafeNoFsync = c.UnsafeNoFsync
	cfg.EnableGRPCGateway = false
	cfg.MaxTxnOps = EmbeddedMaxTxnOps
	cfg.SnapshotCatchUpEntries = EmbeddedSnapshotCatchUpEntries
	if c.HeartbeatInterval > 0 {
		cfg.TickMs = uint(c.HeartbeatInterval / time.Millisecond)
	}
	if c.ElectionTimeout > 0 {
		cfg.ElectionMs = uint(c.ElectionTimeout / time.Millisecond)
	}
	cfg.Logger = "zap"
	cfg.LogLevel = "warn"
	if c.Debug {
		cfg.LogLevel = "debug"
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(c.Logger.With("component", "etcd", "member", c.Name), c.Debug, stopping))
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid etcd config: %w", err)
	}
	return cfg, nil
}

// resolvePort parses raw and, for a tcp URL with port 0, replaces the
// port with one that is free now. With TLS the scheme must be https.
func resolvePort(raw string, secure bool) (u *url.URL, picked bool, err error) {
	u, err = url.Parse(raw)
	if err != nil {
		return nil, false, fmt.Errorf("bad url %q: %w", raw, err)
	}
	switch {
	case secure && u.Scheme != "https":
		return nil, false, fmt.Errorf("bad url %q: scheme must be https (mutual TLS); plain http and unix sockets need Config.Plaintext", raw)
	case u.Scheme == "unix" || u.Scheme == "unixs":
		return u, false, nil
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, false, fmt.Errorf("bad url %q: scheme must be http, https, unix or unixs", raw)
	}
	if u.Port() != "0" {
		return u, false, nil
	}
	port, err := FreePort(u.Hostname())
	if err != nil {
		return nil, false, err
	}
	u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(port))
	return u, true, nil
}

// FreePort returns a TCP port on host that was free a moment ago. Whoever
// binds it must be ready to retry if another process takes it first.
func FreePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("etcdstore: pick free port on %s: %w", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

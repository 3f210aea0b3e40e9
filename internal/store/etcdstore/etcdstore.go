// Package etcdstore implements store.Store on etcd: an embedded member
// started in-process (StartEmbedded) or a client of an existing cluster
// (Connect). It is the only package of vpool that imports go.etcd.io/etcd;
// it imports no other vpool package than internal/store and internal/pki
// (the embedded member's TLS material), and no HTTP handlers, scheduler
// or hypervisor code.
//
// An embedded member takes only clients with a certificate of its own
// private CA (mutual TLS on its client and peer ports); Connect speaks
// TLS with a client certificate and etcd's user/password authentication
// to an external cluster. Embedded members form clusters of several
// servers: members join as learners and are promoted once caught up, and
// a member can tell whether another's process is gone (members.go).
package etcdstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store"
)

// listPage is how many keys one range request of List fetches; longer
// listings are read page by page at one revision.
const listPage = 5000

// Store is a store.Store on etcd. Its zero value is not usable; get one
// from StartEmbedded or Connect.
type Store struct {
	cli *clientv3.Client
	// stopServer stops the embedded member; nil for a client of an
	// external cluster.
	stopServer func()
	endpoints  []string
	// localTLS is the embedded member's TLS material; nil otherwise.
	localTLS *pki.LocalTLS
	// member is the embedded member's name and ID (zero for a client of
	// an external cluster); probe tells whether a member is gone
	// (members.go).
	member Member
	probe  peerProbe
	// stopped is closed when the embedded member stops (nil otherwise).
	stopped   <-chan struct{}
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	renew     *renewers // KeepAlive's shared streams (renew.go)
	// localRev reads the embedded member's revision in process
	// (memberRev.read: its applied revision, after a read index unless
	// the member is alone: readrev.go); nil for a client of an external
	// cluster, which asks over gRPC (Revision).
	localRev  func(ctx context.Context) (int64, error)
	memberRev *memberRev
	// srv is the embedded member (tests reach into it); nil otherwise.
	srv *etcdserver.EtcdServer
	// db is the embedded member's database (defrag.go); nil for a client
	// of an external cluster.
	db memberDB
	// localGet reads a key from the embedded member's applied state in
	// process when it has applied atLeast (ok false: it has not); nil
	// for a client of an external cluster (GetApplied).
	localGet func(ctx context.Context, key string, atLeast int64) (kv *mvccpb.KeyValue, ok bool, err error)
	// local is the embedded member's own watch (watch_local.go); nil for
	// a client of an external cluster, whose watches go over gRPC.
	local *memberWatch
}

var (
	_ store.Store          = (*Store)(nil)
	_ store.RevisionReader = (*Store)(nil)
	_ store.AppliedReader  = (*Store)(nil)
)

// ClientConfig says how to reach an etcd cluster.
type ClientConfig struct {
	// Endpoints are client URLs, e.g. "https://10.0.0.1:2379".
	Endpoints []string
	// TLS secures the connection (ClientTLS builds one from files); nil
	// for plain http endpoints.
	TLS *tls.Config
	// Username and Password authenticate with etcd's auth (both or
	// neither).
	Username, Password string

	dialOpts []grpc.DialOption // Config.dialOpts
}

// Connect returns a Store that talks to an existing etcd cluster at
// endpoints (e.g. "https://10.0.0.1:2379"; "unix:///path" works too).
// tlsConfig may be nil for plain http endpoints. It fails unless the
// cluster answers a linearizable read before ctx ends.
func Connect(ctx context.Context, endpoints []string, tlsConfig *tls.Config) (*Store, error) {
	return ConnectWith(ctx, ClientConfig{Endpoints: endpoints, TLS: tlsConfig})
}

// ConnectWith is Connect with etcd authentication.
func ConnectWith(ctx context.Context, cc ClientConfig) (*Store, error) {
	if len(cc.Endpoints) == 0 {
		return nil, errors.New("etcdstore: connect: no endpoints")
	}
	if (cc.Username == "") != (cc.Password == "") {
		return nil, errors.New("etcdstore: connect: a user needs a password and a password a user")
	}
	s, err := newClientStore(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("etcdstore: connect %v: %w", cc.Endpoints, err)
	}
	return s, nil
}

func newClientStore(ctx context.Context, cc ClientConfig) (*Store, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cc.Endpoints,
		TLS:                  cc.TLS,
		Username:             cc.Username,
		Password:             cc.Password,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Logger:               zap.NewNop(),
		RejectOldCluster:     true,
		DialOptions:          cc.dialOpts,
	})
	if err != nil {
		return nil, err
	}
	// clientv3.New does not wait for a connection; one quorum read proves
	// the cluster is there and has a leader.
	if _, err := cli.Get(ctx, store.Root, clientv3.WithLimit(1), clientv3.WithKeysOnly()); err != nil {
		_ = cli.Close()
		return nil, err
	}
	return &Store{cli: cli, endpoints: cc.Endpoints, renew: newRenewers(cli)}, nil
}

// ClientTLS is a client's TLS configuration from PEM files: caFile
// verifies the servers (empty: the system roots), certFile and keyFile
// are the client certificate (both or neither).
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("etcdstore: CA: %s holds no PEM certificate", caFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case certFile != "" && keyFile != "":
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case certFile != "" || keyFile != "":
		return nil, errors.New("etcdstore: a client certificate needs its key and a key its certificate")
	}
	return cfg, nil
}

// LocalTLS is the embedded member's TLS material (nil for a client of an
// external cluster, or a Plaintext member): the files other processes of
// this server's user need to connect (ClientTLS(CACert, ClientCert,
// ClientKey)).
func (s *Store) LocalTLS() *pki.LocalTLS { return s.localTLS }

// Endpoints returns the client URLs of the store: where the embedded
// member listens, or the endpoints given to Connect.
func (s *Store) Endpoints() []string { return append([]string(nil), s.endpoints...) }

// Close closes the client and, for an embedded member, stops the server.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.renew.close()
		s.closeErr = s.cli.Close()
		if s.stopServer != nil {
			s.stopServer()
		}
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("etcdstore: close: %w", s.closeErr)
		}
	})
	return s.closeErr
}

// wrap maps etcd errors to the store sentinels, prefixed with the
// operation.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case s.closed.Load():
		return fmt.Errorf("etcdstore: %s: %w", op, store.ErrClosed)
	case errors.Is(err, rpctypes.ErrLeaseNotFound), errors.Is(err, rpctypes.ErrGRPCLeaseNotFound):
		return fmt.Errorf("etcdstore: %s: %w", op, store.ErrNoLease)
	case errors.Is(err, rpctypes.ErrCompacted), errors.Is(err, rpctypes.ErrGRPCCompacted):
		return fmt.Errorf("etcdstore: %s: %w", op, store.ErrCompacted)
	case unavailable(err):
		return fmt.Errorf("etcdstore: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("etcdstore: %s: %w", op, err)
}

// unavailable says whether err is etcd failing to answer (no leader, a
// leader change, a timeout inside etcd, no endpoint reachable) rather
// than refusing the request: a write's outcome is then unknown.
func unavailable(err error) bool {
	for _, e := range []error{
		rpctypes.ErrNoLeader, rpctypes.ErrGRPCNoLeader,
		rpctypes.ErrLeaderChanged, rpctypes.ErrGRPCLeaderChanged,
		rpctypes.ErrTimeout, rpctypes.ErrGRPCTimeout,
		rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrGRPCTimeoutDueToLeaderFail,
		rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrGRPCTimeoutDueToConnectionLost,
		rpctypes.ErrTimeoutWaitAppliedIndex, rpctypes.ErrGRPCTimeoutWaitAppliedIndex,
		clientv3.ErrNoAvailableEndpoints,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return status.Code(err) == codes.Unavailable
}

func (s *Store) checkOpen(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("etcdstore: %s: %w", op, store.ErrClosed)
	}
	return ctx.Err()
}

func fromKV(kv *mvccpb.KeyValue) store.KV {
	return store.KV{
		Key:       string(kv.Key),
		Value:     kv.Value,
		CreateRev: kv.CreateRevision,
		ModRev:    kv.ModRevision,
		Lease:     store.LeaseID(kv.Lease),
	}
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, key string) (store.KV, error) {
	if err := s.checkOpen(ctx, "get"); err != nil {
		return store.KV{}, err
	}
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return store.KV{}, s.wrap("get "+key, err)
	}
	if len(resp.Kvs) == 0 {
		return store.KV{}, fmt.Errorf("etcdstore: %w: %s", store.ErrNotFound, key)
	}
	return fromKV(resp.Kvs[0]), nil
}

// GetApplied implements store.AppliedReader: with an embedded member
// that has applied atLeast, the key as its applied state has it, read in
// process; otherwise Get.
func (s *Store) GetApplied(ctx context.Context, key string, atLeast int64) (store.KV, error) {
	if err := s.checkOpen(ctx, "get"); err != nil {
		return store.KV{}, err
	}
	if s.localGet != nil {
		kv, ok, err := s.localGet(ctx, key, atLeast)
		switch {
		case err != nil:
			return store.KV{}, s.wrapLocal(ctx, "get "+key, err)
		case ok && kv == nil:
			return store.KV{}, fmt.Errorf("etcdstore: %w: %s", store.ErrNotFound, key)
		case ok:
			return fromKV(kv), nil
		}
	}
	return s.Get(ctx, key)
}

// Revision implements store.RevisionReader: the store's current
// revision, at least that of every write acknowledged before the call.
// With an embedded member it is read in process: the member's read
// index (etcd confirms it is still the leader, or asks the leader,
// and shares one such round among every read waiting for it), then its
// applied revision once it has applied up to that index; no gRPC, no
// TLS, no range read. Otherwise a count-only read of one key over the
// client, whose header carries the revision.
func (s *Store) Revision(ctx context.Context) (int64, error) {
	if err := s.checkOpen(ctx, "revision"); err != nil {
		return 0, err
	}
	if s.localRev != nil {
		rev, err := s.localRev(ctx)
		if err != nil {
			return 0, s.wrapLocal(ctx, "revision", err)
		}
		return rev, nil
	}
	resp, err := s.cli.Get(ctx, store.LeaderKey, clientv3.WithCountOnly())
	if err != nil {
		return 0, s.wrap("revision", err)
	}
	return resp.Header.Revision, nil
}

// wrapLocal maps an error of the embedded member's own calls (not
// gRPC's): ctx's end as it is, a closed store as ErrClosed, anything
// else (stopped, no leader, a timeout) as ErrUnavailable.
func (s *Store) wrapLocal(ctx context.Context, op string, err error) error {
	switch {
	case s.closed.Load():
		return fmt.Errorf("etcdstore: %s: %w", op, store.ErrClosed)
	case ctx.Err() != nil:
		return fmt.Errorf("etcdstore: %s: %w", op, ctx.Err())
	}
	return fmt.Errorf("etcdstore: %s: %w: %w", op, store.ErrUnavailable, err)
}

// List implements store.Store. Long listings are read in pages, all at
// the revision of the first page, so the result is one consistent
// snapshot.
func (s *Store) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	if err := s.checkOpen(ctx, "list"); err != nil {
		return nil, 0, err
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	if prefix == "" {
		prefix, end = "\x00", "\x00"
	}
	var (
		out []store.KV
		rev int64
		key = prefix
	)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, key, opts...)
		if err != nil {
			return nil, 0, s.wrap("list "+prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
			out = make([]store.KV, 0, resp.Count)
		}
		for _, kv := range resp.Kvs {
			out = append(out, fromKV(kv))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func toCmp(c store.Cond) (clientv3.Cmp, error) {
	switch c.Kind {
	case store.ModRevEquals:
		// A missing key has ModRevision 0, so Rev 0 means absent.
		return clientv3.Compare(clientv3.ModRevision(c.Key), "=", c.Rev), nil
	case store.Exists:
		return clientv3.Compare(clientv3.CreateRevision(c.Key), ">", 0), nil
	case store.Absent:
		return clientv3.Compare(clientv3.CreateRevision(c.Key), "=", 0), nil
	}
	return clientv3.Cmp{}, fmt.Errorf("etcdstore: unknown condition kind %d on %s", c.Kind, c.Key)
}

func toOp(o store.Op) (clientv3.Op, error) {
	switch o.Kind {
	case store.OpPut:
		if o.Lease != 0 {
			return clientv3.OpPut(o.Key, string(o.Value), clientv3.WithLease(clientv3.LeaseID(o.Lease))), nil
		}
		return clientv3.OpPut(o.Key, string(o.Value)), nil
	case store.OpDelete:
		return clientv3.OpDelete(o.Key), nil
	}
	return clientv3.Op{}, fmt.Errorf("etcdstore: unknown op kind %d on %s", o.Kind, o.Key)
}

// Txn implements store.Store.
func (s *Store) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	if err := s.checkOpen(ctx, "txn"); err != nil {
		return false, 0, err
	}
	cmps := make([]clientv3.Cmp, 0, len(conds))
	for _, c := range conds {
		cmp, err := toCmp(c)
		if err != nil {
			return false, 0, err
		}
		cmps = append(cmps, cmp)
	}
	eops := make([]clientv3.Op, 0, len(ops))
	for _, o := range ops {
		op, err := toOp(o)
		if err != nil {
			return false, 0, err
		}
		eops = append(eops, op)
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(eops...).Commit()
	if err != nil {
		return false, 0, s.wrap("txn", err)
	}
	return resp.Succeeded, resp.Header.Revision, nil
}

// Grant implements store.Store. etcd raises TTLs below its minimum
// (about 1.5 election timeouts, 2 s with the defaults) to that minimum.
func (s *Store) Grant(ctx context.Context, ttlSeconds int64) (store.LeaseID, error) {
	if err := s.checkOpen(ctx, "grant"); err != nil {
		return 0, err
	}
	if ttlSeconds <= 0 {
		return 0, fmt.Errorf("etcdstore: lease ttl must be positive, got %d", ttlSeconds)
	}
	resp, err := s.cli.Grant(ctx, ttlSeconds)
	if err != nil {
		return 0, s.wrap("grant", err)
	}
	return store.LeaseID(resp.ID), nil
}

// KeepAlive implements store.Store.
func (s *Store) KeepAlive(ctx context.Context, id store.LeaseID) error {
	if err := s.checkOpen(ctx, "keepalive"); err != nil {
		return err
	}
	return s.wrap(fmt.Sprintf("keepalive %x", int64(id)), s.renew.keepAlive(ctx, int64(id)))
}

// Revoke implements store.Store.
func (s *Store) Revoke(ctx context.Context, id store.LeaseID) error {
	if err := s.checkOpen(ctx, "revoke"); err != nil {
		return err
	}
	_, err := s.cli.Revoke(ctx, clientv3.LeaseID(id))
	return s.wrap(fmt.Sprintf("revoke %x", int64(id)), err)
}

// Compact drops the history before rev; watches from an older revision
// then fail with store.ErrCompacted. etcd compacts periodically by itself
// (Config.CompactionRetention); this is for tests and operators.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	if err := s.checkOpen(ctx, "compact"); err != nil {
		return err
	}
	_, err := s.cli.Compact(ctx, rev, clientv3.WithCompactPhysical())
	return s.wrap("compact", err)
}

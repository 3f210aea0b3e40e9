// Package server is vpool's control-plane front: the user REST API under
// /api/v1 (bearer-token authentication, authorisation by role and project,
// strict request decoding, quota admission through internal/state), the
// agent protocol under /agent/v1 on a separate mutual-TLS listener (join,
// heartbeat with an etcd lease per host, long-polled assignments, VM
// status), /healthz, /metrics and the OpenAPI document. It holds no state
// of its own beyond caches: everything lives in the store.
//
// It imports internal/state, internal/store, internal/model, internal/api,
// internal/pki, internal/metrics and internal/imagepool (image bytes); it must not import etcd, the
// hypervisor drivers, the agent or the CLI.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/auditlog"
	"github.com/vpool/vpool/internal/imagepool"
	"github.com/vpool/vpool/internal/metering/meterstore"
	"github.com/vpool/vpool/internal/metrics"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// Defaults.
const (
	DefaultListen      = "127.0.0.1:8440"
	DefaultAgentListen = "127.0.0.1:8441"
	// HeartbeatInterval is how often agents are told to beat.
	HeartbeatInterval = 3 * time.Second
	// LeaseTTL is the lifetime of a host's liveness lease.
	LeaseTTL = 10 * time.Second
	// AgentCertTTL is the validity of an agent's client certificate.
	AgentCertTTL = 365 * 24 * time.Hour
	// MaxBody is the largest request body accepted.
	MaxBody = 1 << 20
)

// Placer answers a dry-run create: where the VM would go. The controller
// side (scheduler over a snapshot) implements it.
type Placer interface {
	Place(ctx context.Context, vm *model.VM) (api.DryRunResponse, error)
}

// BatchPlacer is a Placer that also answers a batch dry run as the batch
// would be placed: each VM seeing the ones before it, hard affinity and
// anti-affinity groups all or nothing. A batch dry run uses it when the
// Placer has it (controller.DryRunner does), else places each VM alone.
type BatchPlacer interface {
	Placer
	PlaceBatch(ctx context.Context, vms []*model.VM) ([]api.DryRunResponse, error)
}

// Config configures a Server.
type Config struct {
	Store       store.Store
	StoreKind   string // "embedded" | "external"
	Listen      string // user API (default 127.0.0.1:8440; ":0" for any port)
	AgentListen string // agent mTLS listener (default 127.0.0.1:8441)
	DataDir     string // admin.token lives here ("" = keep it in memory)
	Logger      *slog.Logger
	Clock       func() time.Time
	Version     string
	// Controllers, when set, runs beside the listeners for the life of Run
	// (the controller manager plugs in here).
	Controllers func(ctx context.Context) error
	// TLS serves the user API over HTTPS with a certificate of the cluster CA.
	TLS bool
	// Placer answers dry-run creates; nil answers 501.
	Placer Placer
	// Metrics is shared with the controllers; nil creates one.
	Metrics *metrics.Metrics
	// ServerNames are the SANs of the server certificates (default:
	// 127.0.0.1, ::1, localhost, the host name).
	ServerNames []string
	// CAKeyFile holds the key that seals the cluster CA's private key in
	// the store (default DataDir/ca-seal.key, made with the CA; with no
	// DataDir, a key in memory). Every server of a cluster needs the
	// same file: copy it from the first before starting the others.
	CAKeyFile string
	// BackupDirs are the directories under which backup repositories may
	// be registered (default DataDir/backups); nothing else is touched.
	BackupDirs []string
	// Images is the image pool that holds image files; nil refuses
	// image imports (docs/images.md).
	Images *imagepool.Pool
	// UsageSampleInterval is how often the usage of the hosts that beat
	// to this server is written into the store (default
	// DefaultUsageSampleInterval; usage.go).
	UsageSampleInterval time.Duration
	// MeterLive, when set, is this server's metering task's booking not
	// written yet: the usage report and /metrics add it when this server
	// is the leader (docs/metering.md).
	MeterLive *meterstore.Live
	// AgentRate is how many requests a second one host may make on the
	// agent listener, in bursts of ten times as many; heartbeats are
	// counted apart (hostlimit.go). 0 means DefaultAgentRate; negative,
	// no limit.
	AgentRate float64
	// APIRate is how many user API requests a second one project's
	// tokens together (or one token without a project) may make, in
	// bursts of ten times as many; cluster admins are not limited
	// (userlimit.go). 0 means DefaultAPIRate; negative, no limit.
	APIRate float64
	// HeartbeatInterval is what agents are told; 0 chooses it from the
	// hosts of the whole control plane and the renewals' lag
	// (beatpace.go).
	HeartbeatInterval time.Duration
	// HeartbeatBudget is the heartbeats a second the whole control plane
	// is sized for: agents beat every hosts ÷ budget seconds at least
	// (0: DefaultHeartbeatBudget).
	HeartbeatBudget int
	// Name is this server's name: its record in the store
	// (/vpool/servers/NAME), with an embedded store its etcd member's
	// name, and who wrote in audit records. Default "vpool".
	Name string
	// Members manages the embedded store's membership (members.go); nil
	// with an external etcd or an in-memory store.
	Members Members
	// AuditDir receives the audit trail's export files when this server
	// leads (default DataDir/audit; none without a DataDir); AuditWindow
	// is how many records the store keeps (docs/audit.md).
	AuditDir    string
	AuditWindow int
	// AuditLog tunes the audit appender (tests: checkpoint intervals);
	// Store, Signer, Server, Logger and Clock are filled in.
	AuditLog auditlog.Config

	// MaxPendingPlacements bounds the VMs admitted but not yet decided by
	// the scheduler: beyond it a create waits up to PendingWait for room,
	// then is refused with 429 rate_limited and a Retry-After
	// (backlog.go). 0 means DefaultMaxPendingPlacements, negative no
	// bound; PendingWait 0 means DefaultPendingWait.
	MaxPendingPlacements int
	PendingWait          time.Duration

	// HistoryInterval is how often the hosts are sampled for the
	// dashboard's charts (default 10 s).
	HistoryInterval time.Duration

	// noAudit records nothing: only the benchmark that measures the
	// audit trail's cost sets it (there is no switch to turn auditing off).
	noAudit bool
}

// DefaultCAKeyFile is the seal key's file name in the data dir.
const DefaultCAKeyFile = "ca-seal.key"

// Server is one API server. Several may run against one store.
type Server struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	repo    *state.Repo
	ca      *pki.CA
	metrics *metrics.Metrics

	ln, agentLn net.Listener
	tlsCert     tls.Certificate
	adminToken  string
	handler     http.Handler
	agentMux    http.Handler

	drain     chan struct{} // closed when Run begins to shut down
	drainOnce sync.Once
	// drainCtx ends with drain: long polls hang their cancel on it
	// (context.AfterFunc) instead of a goroutine each
	drainCtx    context.Context
	drainCancel context.CancelFunc
	// jobs serves the agents' backups long polls (backup_jobs.go)
	jobs    jobsWatch
	imports sync.WaitGroup // image downloads in the background

	leaseMu sync.Mutex
	// fenceCapWarned: the fence timeout's cap on the heartbeat interval
	// was logged once
	fenceCapWarned atomic.Bool
	leases         map[string]hostLease // per host: the liveness lease this server renews (heartbeat.go)
	pace           beatPace             // the renewals' lag: the stretch of the interval (beatpace.go)

	consoles consoleBroker // serial console sessions waiting for or joined by agents

	memSealKey []byte // the CA seal key when there is no file
	// userDataKey seals tenants' user data (userdata.go): the CA seal
	// key, read once the CA opened with it
	userDataKey []byte

	trust    *trust // which host certificates are valid
	trustRev int64  // the revision trust was loaded at

	nets netHub // the hosts' network views (netview.go)

	view *view // the watch-fed cache of lists and long polls (view.go)
	// backlog bounds the VMs waiting for the scheduler (backlog.go)
	backlog *placeBacklog
	// vmDec decodes each VM version once for the view and the
	// controllers' cache (VMDecoder)
	vmDec *state.VMDecoder
	beats api.HeartbeatDecoder // compact heartbeats' inventories (heartbeat.go)
	hub   *usageHub            // the hosts' heartbeats (usage.go)
	// beatAnswers keeps the encoded heartbeat answers (heartbeat.go)
	beatAnswers beatAnswers

	reports reportQueue   // agents' status reports, group-committed (reports.go)
	lbs     lbHub         // the hosts' load balancers (lbagent.go)
	haPol   haPolicyCache // HA timings for heartbeat answers (hapolicy.go)

	audit        *auditlog.Log      // the audit trail's appender (audit.go)
	auditExport  *auditlog.Exporter // run by the leader (AuditTask)
	unauth       limiter            // unauthenticated requests recorded
	hostLimits   *hostLimits        // each host's requests on the agent listener
	userLimits   *userLimits        // each project's requests on the user API
	auditSkipped atomic.Int64       // unauthenticated requests not recorded

	hist history // the hosts' recent load (history.go)
}

// New prepares a server: it loads or creates the cluster CA and the admin
// token, makes sure the default project exists, and binds both listeners
// (so Addr and AgentAddr are known before Run).
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: config needs a Store")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.AgentListen == "" {
		cfg.AgentListen = DefaultAgentListen
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.StoreKind == "" {
		cfg.StoreKind = "embedded"
	}
	if cfg.Name == "" {
		cfg.Name = "vpool"
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if len(cfg.ServerNames) == 0 {
		cfg.ServerNames = pki.DefaultServerNames()
	}
	if cfg.HistoryInterval <= 0 {
		cfg.HistoryInterval = DefaultHistoryInterval
	}
	if cfg.AuditDir == "" && cfg.DataDir != "" {
		cfg.AuditDir = filepath.Join(cfg.DataDir, "audit")
	}
	if cfg.HeartbeatBudget <= 0 {
		cfg.HeartbeatBudget = DefaultHeartbeatBudget
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger.With("component", "server"), now: cfg.Clock,
		repo: state.New(auditlog.Carrying(cfg.Store), cfg.Clock), metrics: cfg.Metrics,
		leases: map[string]hostLease{},
		unauth: limiter{rate: unauthRate, burst: unauthBurst},
	}
	s.initDrain()
	if cfg.AgentRate == 0 {
		cfg.AgentRate = DefaultAgentRate
	}
	s.hostLimits = newHostLimits(cfg.AgentRate)
	if cfg.APIRate == 0 {
		cfg.APIRate = DefaultAPIRate
	}
	s.userLimits = newUserLimits(cfg.APIRate)
	s.repo.SetReserveCheck(reserveCheck) // the failover reserve, in every admission (ha.go)
	s.nets.s = s
	s.vmDec = state.NewVMDecoder()
	s.hub = newUsageHub()
	s.view = newView(cfg.Store, s.vmDec, s.hub.own)
	s.backlog = newPlaceBacklog(cfg.MaxPendingPlacements, cfg.PendingWait)
	s.view.backlog = s.backlog
	shapes := &txnShapes{count: func(kinds string) { s.metrics.StoreTxns.WithLabelValues(kinds).Inc() }}
	s.view.c.Observe = func(ev store.WatchEvent) {
		kind, _, _ := strings.Cut(strings.TrimPrefix(ev.KV.Key, store.Root), "/")
		s.metrics.StoreChanges.WithLabelValues(kind).Inc()
		shapes.observe(ev)
		s.metrics.StoreRevision.Set(float64(ev.Rev))
	}
	if s.cfg.UsageSampleInterval <= 0 {
		s.cfg.UsageSampleInterval = DefaultUsageSampleInterval
	}
	s.lbs.s = s
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.bootstrap(ctx); err != nil {
		return nil, err
	}
	h, err := s.routes()
	if err != nil {
		return nil, err
	}
	s.handler = h
	if s.agentMux, err = s.agentRoutes(); err != nil {
		return nil, err
	}
	s.metrics.SetCounter(s.countStates)
	s.metrics.SetUsage(s.usageMetrics)
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("server: listen %s: %w", cfg.Listen, err)
	}

	if s.agentLn, err = net.Listen("tcp", cfg.AgentListen); err != nil {
		s.ln.Close()
		return nil, fmt.Errorf("server: agent listen %s: %w", cfg.AgentListen, err)
	}
	// Runs until Run ends, or the store closes (a server never run).
	s.view.start(s.log)
	return s, nil
}

// VMDecoder is the server's shared VM decoder: a controller manager in
// the same process passes it to its cache (controller.Config.Decoder) so
// that each VM version is decoded once, not once per cache.
func (s *Server) VMDecoder() *state.VMDecoder { return s.vmDec }

// bootstrap loads or creates the CA, the server certificate, the admin
// token and the default project.
func (s *Server) bootstrap(ctx context.Context) error {
	ca, err := s.loadOrCreateCA(ctx)
	if err != nil {
		return err
	}
	s.ca = ca
	if s.userDataKey, err = s.sealKey(false); err != nil {
		return err
	}
	if s.tlsCert, err = ca.ServerCert(s.cfg.ServerNames, s.now()); err != nil {
		return err
	}
	s.trust = newTrust(s.repo, s.now)
	if s.trustRev, err = s.trust.load(ctx); err != nil {
		return err
	}
	if err := s.openAudit(ctx); err != nil {
		return err
	}
	if err := s.loadOrCreateAdminToken(ctx); err != nil {
		return err
	}
	if err := s.failInterruptedImports(ctx); err != nil {
		return err
	}
	return s.repo.EnsureProject(ctx, &model.Project{Meta: model.Meta{Name: api.DefaultProject}, Description: "default project"})
}

func newSecret(prefix string) string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// loadOrCreateAdminToken reads DataDir/admin.token, or creates it; the
// store holds only its hash.
func (s *Server) loadOrCreateAdminToken(ctx context.Context) error {
	path := ""
	if s.cfg.DataDir != "" {
		path = filepath.Join(s.cfg.DataDir, "admin.token")
		if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			s.adminToken = strings.TrimSpace(string(b))
		} else if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("server: read admin token: %w", err)
		}
	}
	if s.adminToken == "" {
		s.adminToken = newSecret("vpa_")
		if path != "" {
			if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
				return fmt.Errorf("server: data dir: %w", err)
			}
			if err := os.WriteFile(path, []byte(s.adminToken+"\n"), 0o600); err != nil {
				return fmt.Errorf("server: write admin token: %w", err)
			}
		}
	}
	hash := state.HashSecret(s.adminToken)
	if _, err := s.repo.TokenByHash(ctx, hash); err == nil {
		return nil
	}
	err := s.repo.CreateToken(ctx, &model.Token{ID: "admin-" + hash[:8], Hash: hash, Role: model.RoleAdmin, CreatedAt: s.now()})
	if err != nil && !errors.Is(err, state.ErrExists) {
		return err
	}
	return nil
}

// Addr is the user API's address (host:port).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// AgentAddr is the agent listener's address.
func (s *Server) AgentAddr() string { return s.agentLn.Addr().String() }

// URL is the user API's base URL (http or https).
func (s *Server) URL() string {
	if s.cfg.TLS {
		return "https://" + s.Addr()
	}
	return "http://" + s.Addr()
}

// AdminToken is the admin bearer secret.
func (s *Server) AdminToken() string { return s.adminToken }

// CAPEM is the cluster CA certificate (PEM).
func (s *Server) CAPEM() []byte { return append([]byte(nil), s.ca.CertPEM...) }

// CAHash is the hex SHA-256 of the CA certificate.
func (s *Server) CAHash() string { return s.ca.Hash() }

// Repo is the state repository the server writes through.
func (s *Server) Repo() *state.Repo { return s.repo }

// Metrics returns the metrics (controllers count reconcile errors there).
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }

// Handler is the user API handler (for in-process tests).
func (s *Server) Handler() http.Handler { return s.handler }

// NewJoinToken issues a host join token valid for ttl that joins up to
// uses hosts (0: one).
func (s *Server) NewJoinToken(ctx context.Context, ttl time.Duration, uses int) (api.JoinTokenResponse, error) {
	switch {
	case uses == 0:
		uses = 1
	case uses < 0 || uses > api.MaxJoinTokenUses:
		return api.JoinTokenResponse{}, fieldError("uses", "must be between 1 and %d (got %d)", api.MaxJoinTokenUses, uses)
	}
	secret := newSecret("")
	exp := s.now().Add(ttl)
	tok := &model.Token{Hash: state.HashSecret(secret), Role: model.RoleAgent, Purpose: "join", CreatedAt: s.now(), ExpiresAt: exp, Uses: uses}
	if err := s.repo.CreateToken(ctx, tok); err != nil {
		return api.JoinTokenResponse{}, err
	}
	return api.JoinTokenResponse{Token: pki.FormatJoinToken(s.ca.Hash(), secret), ExpiresAt: exp, AgentAddr: s.AgentAddr(), Uses: uses}, nil
}

// RekeyToken revokes host's certificate and issues a single-use join
// token, valid for ttl, that joins that host name alone.
func (s *Server) RekeyToken(ctx context.Context, host string, ttl time.Duration) (api.JoinTokenResponse, error) {
	secret := newSecret("")
	exp := s.now().Add(ttl)
	tok := &model.Token{Hash: state.HashSecret(secret), Role: model.RoleAgent, CreatedAt: s.now(), ExpiresAt: exp}
	if err := s.repo.RekeyHost(ctx, host, tok); err != nil {
		return api.JoinTokenResponse{}, err
	}
	return api.JoinTokenResponse{Token: pki.FormatJoinToken(s.ca.Hash(), secret), ExpiresAt: exp, AgentAddr: s.AgentAddr(), Uses: 1, Host: host}, nil
}

// Run serves both listeners (and the controllers, when configured) until
// ctx ends, then shuts down gracefully: long polls and event streams end,
// in-flight requests get up to 5 seconds.
func (s *Server) Run(ctx context.Context) error {
	user := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	agent := &http.Server{Handler: s.agentMux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{s.tlsCert},
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    s.ca.Pool(),
			MinVersion:   tls.VersionTLS12,
			// revoked host certificates end at the handshake
			VerifyConnection: s.trust.verifyConnection,
		},
		HTTP2: agentHTTP2()}
	fresh := &freshConns{m: map[net.Conn]bool{}}
	user.ConnState, agent.ConnState = fresh.track, fresh.track
	errc := make(chan error, 3)
	userLn := s.ln
	if s.cfg.TLS {
		userLn = tls.NewListener(s.ln, &tls.Config{Certificates: []tls.Certificate{s.tlsCert}, MinVersion: tls.VersionTLS12})
	}
	go func() { errc <- serveErr(user.Serve(userLn)) }()
	go func() { errc <- serveErr(agent.ServeTLS(s.agentLn, "", "")) }()
	cctx, cancelControllers := context.WithCancel(ctx)
	defer cancelControllers()
	trustDone := make(chan struct{})
	go func() { defer close(trustDone); s.trust.run(cctx, s.cfg.Store, s.trustRev) }()
	go s.sweepAddresses(cctx, 15*time.Second, 30*time.Second)
	go s.runHistory(cctx, s.cfg.HistoryInterval)
	go s.publishSamples(cctx, s.cfg.UsageSampleInterval)
	announced := make(chan struct{})
	go func() { defer close(announced); s.announce(cctx) }()
	go s.promoteLearners(cctx)
	go s.runUserDataSealer(cctx)
	ctrlDone := make(chan error, 1)
	if s.cfg.Controllers != nil {
		go func() { ctrlDone <- s.cfg.Controllers(cctx) }()
	}
	s.log.Info("serving", "api", s.URL(), "agents", s.AgentAddr(), "store", s.cfg.StoreKind)
	var runErr error
	ctrlRunning := s.cfg.Controllers != nil
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case err := <-errc:
			runErr = err
			break wait
		case err := <-ctrlDone:
			// controllers that return nil are done; the API keeps serving
			ctrlRunning = false
			if err != nil && ctx.Err() == nil {
				runErr = fmt.Errorf("server: controllers failed: %w", err)
				break wait
			}
		}
	}
	s.startDrain()
	s.imports.Wait() // downloads end with the drain and mark their images failed
	cancelControllers()
	<-trustDone
	<-announced
	if ctrlRunning {
		<-ctrlDone // controllers end with their context
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fresh.closeAll()
	_ = user.Shutdown(sctx)
	_ = agent.Shutdown(sctx)
	s.audit.Close() // writes what is queued, then returns
	s.revokeLeases()
	s.view.stop()
	return runErr
}

// freshConns tracks connections accepted but not yet used: a graceful
// shutdown would otherwise wait seconds for them (net/http treats a new
// connection as busy for its first 5 seconds).
type freshConns struct {
	mu sync.Mutex
	m  map[net.Conn]bool
}

func (f *freshConns) track(c net.Conn, st http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st == http.StateNew {
		f.m[c] = true
	} else {
		delete(f.m, c)
	}
}

func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.m {
		_ = c.Close()
	}
}

func serveErr(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("server: serve: %w", err)
}

// agentHeaderTable is the HPACK dynamic table (bytes) the agent listener
// encodes its answers' headers with on each connection (HTTP/2's
// default: 4,096).
const agentHeaderTable = 256

// agentHTTP2 configures the agent listener's HTTP/2: every host holds a
// connection open, and each answer's new Date (every second) filled the
// connection's encoding table to 4 KiB, about 4.5 KiB a connection with
// its index (45 MiB at 10,000 hosts). 256 bytes keep the few fixed
// headers indexed (docs/scale.md, sixth round). The decoding table, the
// agents' to fill, keeps its default: a smaller one races the client's
// first requests, encoded before it read the server's settings (the
// server then cannot decode them: a connection error).
func agentHTTP2() *http.HTTP2Config {
	return &http.HTTP2Config{MaxEncoderHeaderTableSize: agentHeaderTable}
}

// agentFrameBytes bounds the agent listener's writes: HTTP/2's server
// buffers a handler's answer in 4 KiB (its handlerChunkWriteSize) but
// passes a larger write on whole, which it then sends in frames as
// large as the client reads (16 KiB), and its framer keeps a write
// buffer as large as the largest frame it wrote for the connection's
// life (so does the client's framer a read buffer). A host's first
// full list of assignments is such an answer: 12 KiB more on each end
// of each agent's connection (docs/scale.md, eighth round).
const agentFrameBytes = 4 << 10

// boundFrames hands h's answers to the listener in writes of at most
// agentFrameBytes, so that no frame is larger.
func boundFrames(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&frameBound{w}, r)
	})
}

// frameBound is boundFrames' ResponseWriter.
type frameBound struct{ http.ResponseWriter }

func (w *frameBound) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k, err := w.ResponseWriter.Write(p[:min(len(p), agentFrameBytes)])
		n += k
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

func (w *frameBound) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *frameBound) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// initDrain readies drain and drainCtx (New; tests that build a Server
// by hand).
func (s *Server) initDrain() {
	s.drain = make(chan struct{})
	s.drainCtx, s.drainCancel = context.WithCancel(context.Background())
	s.jobs.s = s
}

// startDrain ends every long poll and stream (Run, shutting down).
func (s *Server) startDrain() {
	s.drainOnce.Do(func() {
		close(s.drain)
		s.drainCancel()
	})
}

// streamContext ends when the request ends or the server drains. It
// starts no goroutine: every agent holds a long poll open, and at 10,000
// hosts a goroutine each (8 KiB of stack at least) was 80 MiB of the
// server's memory at rest (docs/scale.md, sixth round).
func (s *Server) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(s.drainCtx, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

// revokeLeases drops nothing: leases outlive a server restart on purpose
// (another server keeps them alive on the next heartbeat); this only
// forgets them locally.
func (s *Server) revokeLeases() {
	s.leaseMu.Lock()
	s.leases = map[string]hostLease{}
	s.leaseMu.Unlock()
}

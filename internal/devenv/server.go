// Package devenv assembles vpool's processes out of their parts: a control
// plane node (store + API server + controllers), agents with their
// drivers, and `vpool dev` — server, embedded etcd, one local agent and N
// simulated hosts in one process, state in one directory. cmd/vpool and
// the in-process cluster tests use it, so that what runs in tests is what
// runs in production.
//
// It may import every vpool package; nothing but cmd/vpool and tests may
// import it.
package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/imagepool"
	"github.com/vpool/vpool/internal/metering"
	"github.com/vpool/vpool/internal/metering/meterstore"
	"github.com/vpool/vpool/internal/metrics"
	"github.com/vpool/vpool/internal/server"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// ServerConfig configures a control-plane node.
type ServerConfig struct {
	// DataDir holds admin.token and, without EtcdEndpoints or Store, the
	// embedded etcd member under DataDir/etcd.
	DataDir     string
	Listen      string // user API (default 127.0.0.1:8440)
	AgentListen string // agent mTLS listener (default 127.0.0.1:8441)
	// EtcdEndpoints connects to an existing etcd cluster instead of
	// embedding a member.
	EtcdEndpoints []string
	// EtcdCACert, EtcdCert and EtcdKey are PEM files for TLS to
	// EtcdEndpoints: the CA that signed the members (empty: the system
	// roots) and a client certificate with its key.
	EtcdCACert, EtcdCert, EtcdKey string
	// EtcdUser and EtcdPassword authenticate with etcd's auth.
	EtcdUser, EtcdPassword string
	// CAKeyFile holds the key that seals the cluster CA in the store
	// (default DataDir/ca-seal.key); every server of a cluster needs the
	// same one.
	CAKeyFile string
	// BackupDirs are where backup repositories may be registered
	// (default DataDir/backups).
	BackupDirs []string
	// Backup tunes the backup controller (tests shorten its interval);
	// Repo, Keys, Cluster, Leading, Logger and Clock are filled in.
	Backup controller.BackupConfig
	// Store, when set, is used as is (tests: memstore) and not closed.
	Store store.Store
	// Name identifies this server in leader election (default "vpool").
	Name    string
	Logger  *slog.Logger
	Clock   func() time.Time
	Version string
	// TLS serves the user API over HTTPS.
	TLS bool
	// ServerNames are the names (IPs, DNS names) in the server's
	// certificates (default: pki.DefaultServerNames).
	ServerNames []string
	// EtcdUnsafeNoFsync skips fsync in the embedded member (tests only).
	EtcdUnsafeNoFsync bool
	// Controller tunes the controllers (tests shorten intervals); Store,
	// Identity, Logger, Clock and ReconcileErrors are filled in.
	Controller controller.Config
	// ImagePool is the directory of image files (default
	// DataDir/image-pool; none without a DataDir). Servers sharing a
	// store must share it (docs/images.md).
	ImagePool string
	// ImageTool converts disk images (cmd/vpool hands in qemu-img's);
	// nil takes only kernels and initrds.
	ImageTool imagepool.Tool
	// AuditDir receives the audit trail's export files (default
	// DataDir/audit); AuditWindow is how many records the store keeps
	// (default 20,000); AuditExportInterval how often the leader exports
	// and prunes (default 10 s). docs/audit.md.
	AuditDir            string
	AuditWindow         int
	AuditExportInterval time.Duration
	// AgentRate bounds each host's requests on the agent listener
	// (server.Config.AgentRate).
	AgentRate float64
	// MaxPendingPlacements bounds the VMs waiting for the scheduler
	// before creates wait and are refused with 429
	// (server.Config.MaxPendingPlacements).
	MaxPendingPlacements int
	// APIRate bounds each project's requests on the user API
	// (server.Config.APIRate).
	APIRate float64
	// MeterInterval is how often the leader samples usage for metering
	// (default 1 minute); GridSeriesFile is a grid-intensity time series
	// (TIME,SITE,G_PER_KWH lines) that overrides the settings
	// (docs/metering.md).
	MeterInterval  time.Duration
	GridSeriesFile string
	// HistoryInterval is how often the server samples the hosts for the
	// dashboard's charts (default 10 s).
	HistoryInterval time.Duration

	// A control plane of several servers, each with an embedded member
	// (cluster.go, docs/ha.md). PeerURL is where this server's member
	// serves raft (https, a fixed port the others reach). InitialCluster
	// ("NAME=URL,...", NAME being each server's Name) starts members
	// together; Join (agent listeners of running servers) with JoinToken
	// (from vpool cluster member add) adds this one to a running
	// cluster. A member with data restarts from it and ignores both.
	PeerURL        string
	InitialCluster string
	Join           []string
	JoinToken      string
}

// Server is a running control-plane node: store, API server, controllers.
type Server struct {
	*server.Server
	Store      store.Store
	Controller *controller.Manager
	kind       string
	ownStore   bool
}

// StartServer opens the store and prepares the API server and the
// controllers (listeners are bound, so Addr and AgentAddr are known);
// Run serves.
func StartServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Name == "" {
		cfg.Name = "vpool"
	}
	if cfg.AuditExportInterval <= 0 {
		cfg.AuditExportInterval = 10 * time.Second
	}
	if cfg.MeterInterval <= 0 {
		cfg.MeterInterval = meterstore.DefaultSampleEvery
	}
	st, kind, own, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	m := metrics.New()
	var members server.Members
	var leaderGone func(context.Context, string) bool
	var storeTerm func(context.Context) (uint64, error)
	if es, ok := st.(*etcdstore.Store); ok {
		storeTerm = es.RaftTerm // an election makes fence commands wait (docs/ha.md)
		if kind == "embedded" {
			members, leaderGone = es, es.MemberGone
		}
	}
	pool, err := openImagePool(cfg)
	if err != nil {
		if own {
			_ = st.Close()
		}
		return nil, err
	}
	var mgr *controller.Manager // made once the server is: it records decisions through the server's audit log
	live := &meterstore.Live{}  // the leader's metering booking not written yet
	srv, err := server.New(server.Config{
		Images:               pool,
		Store:                st,
		StoreKind:            kind,
		Listen:               cfg.Listen,
		AgentListen:          cfg.AgentListen,
		ServerNames:          cfg.ServerNames,
		DataDir:              cfg.DataDir,
		Logger:               cfg.Logger,
		Clock:                cfg.Clock,
		Version:              cfg.Version,
		Controllers:          func(ctx context.Context) error { return mgr.Run(ctx) },
		BackupDirs:           cfg.BackupDirs,
		TLS:                  cfg.TLS,
		CAKeyFile:            cfg.CAKeyFile,
		Placer:               controller.NewDryRunner(st, nil, cfg.Clock),
		Metrics:              m,
		Name:                 cfg.Name,
		AuditDir:             cfg.AuditDir,
		AuditWindow:          cfg.AuditWindow,
		Members:              members,
		MeterLive:            live,
		AgentRate:            cfg.AgentRate,
		APIRate:              cfg.APIRate,
		MaxPendingPlacements: cfg.MaxPendingPlacements,

		HistoryInterval: cfg.HistoryInterval,
	})
	if err != nil {
		if own {
			_ = st.Close()
		}
		return nil, err
	}
	cc := cfg.Controller
	cc.Store, cc.Identity, cc.Logger, cc.Clock = st, cfg.Name, cfg.Logger, cfg.Clock
	if cc.LeaderGone == nil {
		cc.LeaderGone = leaderGone
	}
	if cc.StoreTerm == nil {
		cc.StoreTerm = storeTerm
	}
	cc.ReconcileErrors = m.ReconcileError
	cc.GateCommitted = m.GateCommit
	if kind == "embedded" {
		cc.MaxTxnOps = etcdstore.EmbeddedMaxTxnOps // our own member takes larger groups
	}
	if cc.Placer == nil {
		cc.Placer = controller.NewSchedulerPlacer()
	}
	cc.Audit = srv.Audit()
	cc.Decoder = srv.VMDecoder() // each VM version decoded once for the view and the controllers
	b := cfg.Backup
	b.Keys, b.Cluster, b.Backend = srv.BackupRepoKey, srv.ClusterID(), srv.BackupRepoBackend
	b.Logger, b.Clock = cfg.Logger, cfg.Clock
	bc := controller.NewBackupController(b)
	cc.Tasks = append(cc.Tasks, controller.LeaderTask{Name: "audit-export", Every: cfg.AuditExportInterval,
		New: func() func(context.Context, store.Store) error { return srv.AuditTask }},
		meterTask(cfg, srv.MeterSource(), live), bc.Task())
	mgr = controller.New(cc)
	mgr.SetUsage(srv) // usage lives in the server's memory and samples
	return &Server{Server: srv, Store: st, Controller: mgr, kind: kind, ownStore: own}, nil
}

// meterTask is the leader's metering: a meter per term, fed from the
// server's view (Server.MeterSource: the records as stored, not listed
// from the store every minute), its rollups written through the term's
// store.
func meterTask(cfg ServerConfig, src meterstore.Source, live *meterstore.Live) controller.LeaderTask {
	var series func() map[string][]metering.Point
	if cfg.GridSeriesFile != "" {
		series = meterstore.SeriesFile(cfg.GridSeriesFile, cfg.Logger)
	}
	return controller.LeaderTask{Name: "metering", Every: cfg.MeterInterval, New: func() func(context.Context, store.Store) error {
		t := meterstore.NewTask(meterstore.Config{Source: src,
			Grid: meterstore.SettingsGrid(series), Clock: cfg.Clock, Logger: cfg.Logger.With("component", "metering"),
			PersistEvery: cfg.MeterInterval, Live: live})
		return t.Step
	}}
}

func openStore(ctx context.Context, cfg ServerConfig) (st store.Store, kind string, own bool, err error) {
	switch {
	case cfg.Store != nil:
		return cfg.Store, "memory", false, nil
	case len(cfg.EtcdEndpoints) > 0:
		cc := etcdstore.ClientConfig{Endpoints: cfg.EtcdEndpoints, Username: cfg.EtcdUser, Password: cfg.EtcdPassword}
		if cfg.EtcdCACert != "" || cfg.EtcdCert != "" || cfg.EtcdKey != "" {
			tc, err := etcdstore.ClientTLS(cfg.EtcdCACert, cfg.EtcdCert, cfg.EtcdKey)
			if err != nil {
				return nil, "", false, fmt.Errorf("devenv: etcd TLS: %w", err)
			}
			cc.TLS = tc
		}
		s, err := etcdstore.ConnectWith(ctx, cc)
		if err != nil {
			return nil, "", false, fmt.Errorf("devenv: connect to etcd %v: %w", cfg.EtcdEndpoints, err)
		}
		return s, "external", true, nil
	case cfg.DataDir == "":
		return nil, "", false, errors.New("devenv: a data directory is needed for the embedded etcd")
	default:
		ec := etcdstore.Config{
			DataDir:       filepath.Join(cfg.DataDir, "etcd"),
			Name:          cfg.Name,
			Logger:        cfg.Logger.With("component", "etcd"),
			UnsafeNoFsync: cfg.EtcdUnsafeNoFsync,
		}
		if err := memberConfig(ctx, cfg, &ec); err != nil {
			return nil, "", false, err
		}
		s, err := etcdstore.StartEmbedded(ctx, ec)
		if err != nil {
			return nil, "", false, err
		}
		return s, "embedded", true, nil
	}
}

// openImagePool opens the image pool of cfg (nil when there is no
// directory for it). Its ID names this machine and directory.
func openImagePool(cfg ServerConfig) (*imagepool.Pool, error) {
	dir := cfg.ImagePool
	if dir == "" && cfg.DataDir != "" {
		dir = filepath.Join(cfg.DataDir, "image-pool")
	}
	if dir == "" {
		return nil, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("devenv: image pool: %w", err)
	}
	host, _ := os.Hostname()
	return imagepool.New(imagepool.Config{Dir: abs, Tool: cfg.ImageTool, ID: host + ":" + abs})
}

// Run serves until ctx ends, then closes the store it opened. It ends
// with an error when the embedded store member stops of its own accord
// (removed from the cluster).
func (s *Server) Run(ctx context.Context) error {
	var memberStopped <-chan struct{}
	if es, ok := s.Store.(*etcdstore.Store); ok && s.ownStore {
		memberStopped = es.MemberStopped()
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lost atomic.Bool
	go func() {
		select {
		case <-memberStopped:
			lost.Store(true)
			cancel()
		case <-rctx.Done():
		}
	}()
	err := s.Server.Run(rctx)
	if lost.Load() && ctx.Err() == nil && err == nil {
		err = errors.New("devenv: this server's store member stopped (removed from the cluster, or failed): the server stops too")
	}
	if s.ownStore {
		if cerr := s.Store.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("devenv: close store: %w", cerr)
		}
	}
	return err
}

// Kind is "embedded", "external" or "memory".
func (s *Server) Kind() string { return s.kind }

// AgentURL is the agent listener's URL.
func (s *Server) AgentURL() string { return "https://" + s.AgentAddr() }

package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// Defaults of Config.
const (
	DefaultLeaseTTL        = 6 * time.Second
	DefaultResyncInterval  = 15 * time.Second
	DefaultDeleteGrace     = 5 * time.Minute
	DefaultHostDownGrace   = 0 // host HA follows the cluster policy's timings
	DefaultMaxEvents       = 10000
	DefaultMaxEventAge     = 24 * time.Hour
	DefaultCompactInterval = time.Minute
	// Finished migrations are kept for a week, at most 1,000 of them.
	DefaultMigrationRetention = 7 * 24 * time.Hour
	DefaultMaxMigrations      = 1000
)

// Config configures a Manager. Store and Identity are required; every
// other field has a default.
type Config struct {
	Store store.Store
	// Identity names this server; it is the value of the leader key.
	Identity string
	Logger   *slog.Logger
	// Clock stamps objects and events and measures grace periods.
	// Timers (keep-alives, resyncs) run on real time.
	Clock func() time.Time
	// Placer chooses hosts; NewSchedulerPlacer() (internal/scheduler, all
	// plugins) when nil.
	Placer Placer
	// ReconcileErrors, when set, is called once per failed reconcile with
	// the controller's name (election, repair, liveness, scheduling,
	// cleanup, compaction): wire metrics.(*Metrics).ReconcileError here.
	ReconcileErrors func(controller string)
	// GateCommitted, when set, is called after each group of placements
	// the gate committed (or lost) with its size and how long the commit
	// took, re-check included: wire metrics.(*Metrics).GateCommit here.
	GateCommitted func(placements int, took time.Duration)
	// MaxTxnOps is the store's cap on a transaction's operations when it
	// is above etcd's default (state.MaxTxnOps): the gate's groups of
	// placements grow to it (etcdstore.EmbeddedMaxTxnOps for our own
	// member; 0 for an external etcd of default settings).
	MaxTxnOps int

	// LeaseTTL is the leader lease's time to live (whole seconds).
	LeaseTTL time.Duration
	// ResyncInterval is how often controllers re-run a full pass even when
	// no watch event arrived (grace periods, missed wake-ups).
	ResyncInterval time.Duration
	// DeleteGrace is how long a VM being deleted on a down host waits for
	// its host to come back before its deletion is finished without it.
	DeleteGrace time.Duration
	// HostDownGrace, when longer than the cluster policy's suspect
	// timeout, delays host HA's whole timeline by the difference (a host
	// is suspect only after HostDownGrace without a renewal, and fenced
	// that much later too): for tests and tools that seed hosts without
	// agents. Host liveness otherwise follows the policy's HA timings
	// (model.HAPolicy). Delaying the server's side only ever makes a
	// restart later than the agent's self-fence: it stays safe.
	HostDownGrace time.Duration
	// MaxEvents and MaxEventAge bound the event log: events beyond the
	// newest MaxEvents, and events older than MaxEventAge, are deleted.
	MaxEvents   int
	MaxEventAge time.Duration
	// CompactInterval is how often the event log is compacted.
	CompactInterval time.Duration
	// MigrationRetention and MaxMigrations bound the finished migrations
	// kept (with the same compaction): older ones, and all but the newest
	// MaxMigrations, are deleted once both hosts confirmed their clean-up.
	MigrationRetention time.Duration
	MaxMigrations      int

	// Liveness answers the last renewal of each host's liveness (host
	// HA, ha.go); the host records' LastSeen when nil.
	Liveness LivenessSource
	// Fencer, when set, powers a failed host off; its success fences the
	// host at once. It runs ha.fenceCommandMillis after the host's last
	// renewal (the policy; the fence timeout by default), never within a
	// fence timeout of the term's start or of a change of StoreTerm.
	Fencer HostFencer
	// StoreTerm, when set, answers the store's raft term
	// (etcdstore.Store.RaftTerm); a change means renewals may have
	// stalled in an election, so no fence command runs for a fence
	// timeout. Nil: a store without elections (memstore).
	StoreTerm func(ctx context.Context) (uint64, error)

	// Power switches hosts to standby and back (power controller);
	// AgentPower when nil.
	Power HostPower
	// EnergyPersistInterval is how often the energy ledger is written to
	// the store (default 1 minute).
	EnergyPersistInterval time.Duration
	// Usage answers measured usage (usage.go); nil reads it from the
	// host and VM records.
	Usage UsageView
	// Decoder, when set, is shared with the server's view so that each
	// stored VM version is decoded once per process (nil: the cache
	// decodes its own).
	Decoder *state.VMDecoder

	// Audit records the controllers' decisions (placements, moves, power);
	// nothing when nil. Tasks run on the leader beside the controllers,
	// each on its own goroutine every Task.Every (audit export, metering).
	Audit Auditor
	Tasks []LeaderTask
	// VMUsage is where the scaling groups' controller reads members'
	// CPU use (nil: Usage when set, else the usage in VM records).
	VMUsage VMUsage
	// LeaderGone, when set, tells whether the server named leader is gone
	// for sure (its process exited: etcdstore.Store.MemberGone). A
	// follower that hears so twice in a row ends the dead leader's term
	// at once instead of waiting out its lease (docs/ha.md). A wrong
	// answer costs a needless election, never two leaders: the fence
	// stops the deposed term's writes.
	LeaderGone func(ctx context.Context, leader string) bool

	// NoElection runs the controllers at once, without campaigning for
	// the leader key and without the leadership fence on commits, so that
	// several managers place at the same time on one store.
	//
	// For tests and benchmarks only: it exists to prove that the
	// compare-and-swap on VM and allocation revisions alone keeps every
	// host within capacity × ratio when servers race (test/placement).
	// Never set it in production: every such manager would also run
	// liveness, cleanup and compaction.
	NoElection bool
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Placer == nil {
		c.Placer = NewSchedulerPlacer()
	}
	if c.ReconcileErrors == nil {
		c.ReconcileErrors = func(string) {}
	}
	if c.GateCommitted == nil {
		c.GateCommitted = func(int, time.Duration) {}
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.ResyncInterval <= 0 {
		c.ResyncInterval = DefaultResyncInterval
	}
	if c.DeleteGrace <= 0 {
		c.DeleteGrace = DefaultDeleteGrace
	}
	if c.HostDownGrace <= 0 {
		c.HostDownGrace = DefaultHostDownGrace
	}
	if c.MaxEvents <= 0 {
		c.MaxEvents = DefaultMaxEvents
	}
	if c.MaxEventAge <= 0 {
		c.MaxEventAge = DefaultMaxEventAge
	}
	if c.CompactInterval <= 0 {
		c.CompactInterval = DefaultCompactInterval
	}
	if c.MigrationRetention <= 0 {
		c.MigrationRetention = DefaultMigrationRetention
	}
	if c.MaxMigrations <= 0 {
		c.MaxMigrations = DefaultMaxMigrations
	}
	if c.Power == nil {
		c.Power = AgentPower{}
	}
	if c.Audit == nil {
		c.Audit = noAudit{}
	}
	if c.EnergyPersistInterval <= 0 {
		c.EnergyPersistInterval = DefaultEnergyPersistInterval
	}
}

// ErrConfig says a Config is unusable.
var ErrConfig = errors.New("controller: invalid config")

// Manager campaigns for leadership and, while it leads, runs the
// controllers. Every server runs one; exactly one leads at a time.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	leading atomic.Bool
	// terms counts leadership terms won by this manager (tests).
	terms atomic.Int64
	// epochs numbers placement snapshots (Snapshot.Epoch).
	epochs atomic.Uint64
	// explPruned is when orphaned explanations were last pruned (unix
	// nanoseconds; 0: never): explanations.go.
	explPruned atomic.Int64
}

// New returns a Manager. It does nothing until Run.
func New(cfg Config) *Manager {
	cfg.setDefaults()
	return &Manager{
		cfg: cfg,
		log: cfg.Logger.With("component", "controller", "identity", cfg.Identity),
	}
}

// SetUsage sets Config.Usage; call it before Run (the server that
// answers usage is made after the manager it runs).
func (m *Manager) SetUsage(v UsageView) { m.cfg.Usage = v }

// IsLeader reports whether this manager leads now.
func (m *Manager) IsLeader() bool { return m.leading.Load() }

// Leader returns the identity of the current leader, or "" when no server
// leads at the moment.
func (m *Manager) Leader(ctx context.Context) (string, error) {
	kv, err := m.cfg.Store.Get(ctx, store.LeaderKey)
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("controller: read leader: %w", err)
	}
	return string(kv.Value), nil
}

// Run campaigns for leadership and runs the controllers while leading,
// until ctx ends (then it resigns and returns nil). Store failures are
// retried; it returns an error only for an unusable Config or a closed
// store.
func (m *Manager) Run(ctx context.Context) error {
	if m.cfg.Store == nil || m.cfg.Identity == "" {
		return fmt.Errorf("%w: Store and Identity are required", ErrConfig)
	}
	step := m.campaign
	if m.cfg.NoElection {
		step = m.runUnelected
	}
	for attempt := 0; ; attempt++ {
		err := step(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, store.ErrClosed) {
			return fmt.Errorf("controller: %w", err)
		}
		if err != nil {
			m.cfg.ReconcileErrors("election")
			m.log.Warn("leader election failed, retrying", "err", err)
		} else {
			attempt = 0
		}
		if !sleep(ctx, retryDelay(attempt)) {
			return nil
		}
	}
}

// runUnelected runs the controllers without a leadership term
// (Config.NoElection: tests and benchmarks only).
func (m *Manager) runUnelected(ctx context.Context) error {
	m.leading.Store(true)
	defer m.leading.Store(false)
	return m.runControllers(ctx, m.newTerm())
}

// retryDelay backs off from 50 ms to 2 s.
func retryDelay(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 6)
	return min(d, 2*time.Second)
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

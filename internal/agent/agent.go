// Package agent is the host side of vpool: it joins the cluster with a
// token, then over mutual TLS keeps a heartbeat (inventory and usage),
// long-polls the VMs assigned to its host and converges them through a
// hypervisor.Driver, reporting each VM's status. Restarting the agent never
// stops a VM: on start it lists the driver and re-attaches.
//
// The agent talks to the server only through the agent protocol
// (api.AgentRoutes). It must not import the store, the server, the state
// repository or any concrete driver.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// Sentinel errors.
var (
	ErrBadToken   = errors.New("agent: bad join token")
	ErrCAMismatch = errors.New("agent: server CA does not match the join token")
	ErrNotJoined  = errors.New("agent: not joined")
	ErrConfig     = errors.New("agent: bad config")
)

// Defaults of Config.
const (
	DefaultHeartbeatInterval = time.Second
	DefaultStatusInterval    = 10 * time.Second
	DefaultStopTimeout       = 30 * time.Second
	DefaultPollWait          = 30 * time.Second
	DefaultParallel          = 8
)

// Config configures an Agent. ServerURL, StateDir, HostName and Driver are
// required.
type Config struct {
	// ServerURL is the server's agent listener, e.g. https://127.0.0.1:8441,
	// or those of several servers of one control plane, comma-separated:
	// the agent fails over between them (transport.go).
	ServerURL string
	// JoinToken ("vpool1.<ca-hash>.<secret>") is needed only for the first
	// start; afterwards the identity in StateDir is used, unless the
	// token is a re-key token of this host (vpool host rekey).
	JoinToken string
	// StateDir holds the agent's key, certificate and the cluster CA.
	StateDir string
	HostName string
	Labels   map[string]string
	// Address is where other hosts reach this one (migration traffic).
	Address string
	// Networks names the networks this host is attached to; the migration
	// pre-checks refuse a target without the VM's networks. Nil: not
	// reported (not checked).
	Networks []string
	// Net makes this host serve vpool networks (netloop.go); nil: none.
	Net    *NetConfig
	Driver hypervisor.Driver
	Logger *slog.Logger
	// Clock stamps reports; timers run on real time.
	Clock func() time.Time
	// HeartbeatInterval is how often the lease is renewed (the server's
	// answer overrides it). Default 3s.
	HeartbeatInterval time.Duration
	// StatusInterval is how often every assigned VM is converged and
	// checked even when no assignment changed. Default 10s.
	StatusInterval time.Duration
	// StopTimeout is the graceful stop timeout. Default 30s.
	StopTimeout time.Duration
	// PollWait is the long-poll wait of the assignments call. Default 30s.
	PollWait time.Duration
	// Parallel bounds the VMs converged at once. Default 8.
	Parallel int
	// Version is reported in heartbeats.
	Version string
	// ResolveImage turns an image name of a VM spec into what the driver
	// boots. Nil: with ImageCache, the image's files are fetched from the
	// server into ImageCache; without, the driver gets only the name (a
	// simulated host needs no bytes).
	ResolveImage func(name string) (*hypervisor.Image, error)
	// ImageCache is the directory image files are fetched into, by
	// SHA-256 (docs/images.md).
	ImageCache string
	// Standby says whether the agent pretends to sleep when the server
	// puts its host to standby (default: with the sim driver only), and
	// WakeDelay how long it takes to wake (a simulated boot).
	Standby   StandbyMode
	WakeDelay time.Duration
}

func (c *Config) setDefaults() error {
	switch {
	case c.ServerURL == "":
		return fmt.Errorf("%w: ServerURL is required", ErrConfig)
	case c.StateDir == "":
		return fmt.Errorf("%w: StateDir is required", ErrConfig)
	case c.HostName == "":
		return fmt.Errorf("%w: HostName is required", ErrConfig)
	case c.Driver == nil:
		return fmt.Errorf("%w: Driver is required", ErrConfig)
	}
	if err := model.ValidName("host", c.HostName); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = DefaultStatusInterval
	}
	if c.StopTimeout <= 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.PollWait <= 0 {
		c.PollWait = DefaultPollWait
	}
	if c.Parallel <= 0 {
		c.Parallel = DefaultParallel
	}
	return nil
}

// Agent runs one host.
type Agent struct {
	cfg        Config
	log        *slog.Logger
	base       string // the first server's agent listener
	serverName string
	servers    []server // every server's (transport.go)
	client     *transport
	// compact says the server that answered the last beat takes the
	// compact heartbeat body (HeartbeatResponse.Accepts): the next beats
	// go in it (beat).
	compact atomic.Bool

	mu       sync.Mutex
	assigned map[string]*model.VM // key project/name -> latest assignment
	haveList bool                 // assignments received at least once
	rev      int64
	vms      map[string]*vmState // per VM bookkeeping, by key
	kick     chan struct{}
	hbEvery  time.Duration
	doneSeq  int64 // counts finished VM workers

	ops opsState // snapshot requests beside the assignments
	fn  fence    // the self-fencing watchdog's state (fence.go)

	images *imageCache // nil without Config.ImageCache
	net    netState    // the host's virtual networks (netloop.go)
}

// New checks the config and returns an agent; nothing happens until Run.
func New(cfg Config) (*Agent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	servers, err := parseServers(cfg.ServerURL)
	if err != nil {
		return nil, err
	}
	if cfg.JoinToken != "" {
		if _, err := ParseJoinToken(cfg.JoinToken); err != nil {
			return nil, err
		}
	}
	var images *imageCache
	if cfg.ImageCache != "" {
		images = &imageCache{dir: cfg.ImageCache}
	}
	return &Agent{
		images:     images,
		cfg:        cfg,
		log:        cfg.Logger.With("component", "agent", "host", cfg.HostName),
		base:       servers[0].base,
		serverName: servers[0].name,
		servers:    servers,
		assigned:   map[string]*model.VM{},
		vms:        map[string]*vmState{},
		kick:       make(chan struct{}, 1),
		hbEvery:    cfg.HeartbeatInterval,
		net:        netState{kick: make(chan struct{}, 1)},
	}, nil
}

// Run joins (when StateDir holds no identity), re-attaches to the VMs the
// driver has, and runs the heartbeat, assignment and converge loops until
// ctx ends. It returns nil when ctx ends, or an error that retrying cannot
// fix (a bad or refused join token). VMs keep running when Run returns.
func (a *Agent) Run(ctx context.Context) error {
	id, err := a.identity(ctx)
	if err != nil {
		return err
	}
	name := a.serverName
	if len(a.servers) > 1 {
		name = "" // each server's own, from the URL it is dialled at
	}
	a.client = &transport{base: a.base, http: &http.Client{
		Transport: withFailover(&http.Transport{TLSClientConfig: id.tlsConfig(name), MaxIdleConnsPerHost: 16}, a.servers),
	}}
	defer a.client.http.CloseIdleConnections()
	a.secureMigrations(ctx, id)
	a.reattach(ctx)

	var wg sync.WaitGroup
	loops := []func(context.Context){a.heartbeatLoop, a.fenceLoop, a.assignmentsLoop, a.convergeLoop, a.migrationsLoop, a.consoleLoop, a.backupLoop}
	if a.cfg.Net != nil {
		loops = append(loops, a.networksLoop)
		if a.cfg.Net.Balancers != nil {
			loops = append(loops, a.balancersLoop)
		}
	}
	for _, loop := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// identity loads the stored identity or joins, retrying transient
// failures; a refused token is final. A join token beside a current
// identity is tried once: a re-key token of this host (vpool host rekey)
// replaces the identity, any other is refused by the server (the name
// is taken; nothing is consumed) and the stored identity stays.
func (a *Agent) identity(ctx context.Context) (*identity, error) {
	id, err := loadIdentity(a.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	if id != nil && !id.expired(a.cfg.Clock()) {
		if a.cfg.JoinToken == "" {
			return id, nil
		}
		nid, err := a.join(ctx)
		if err != nil {
			a.log.Info("join token not used: this host holds an identity, and the token is no re-key token of it", "err", err)
			return id, nil
		}
		a.log.Warn("re-keyed: joined again with a new key and certificate")
		return nid, nil
	}
	if id != nil {
		a.log.Warn("client certificate expired; joining again (needs a token from vpool host rekey)")
	}
	bo := newBackoff(200*time.Millisecond, 10*time.Second)
	for {
		id, err := a.join(ctx)
		if err == nil {
			a.log.Info("joined the cluster", "server", a.base)
			return id, nil
		}
		switch st := httpStatus(err); {
		case errors.Is(err, ErrBadToken), errors.Is(err, ErrNotJoined), errors.Is(err, ErrCAMismatch),
			st == http.StatusUnauthorized, st == http.StatusForbidden, st == http.StatusBadRequest, st == http.StatusConflict:
			return nil, err
		}
		a.log.Warn("join failed; retrying", "err", err)
		if err := sleepCtx(ctx, bo.next()); err != nil {
			return nil, err
		}
	}
}

// reattach lists what the driver runs, before anything else happens. It
// never stops a VM; it only makes the agent aware of them.
func (a *Agent) reattach(ctx context.Context) {
	infos, err := a.cfg.Driver.List(ctx)
	if err != nil {
		a.log.Error("list driver VMs for re-attach", "err", err)
		return
	}
	running, unreachable := 0, 0
	for _, in := range infos {
		switch in.State {
		case hypervisor.StateRunning:
			running++
		case hypervisor.StateUnknown:
			unreachable++
			a.log.Warn("VM unreachable after re-attach; left running, reported as unknown", "vm", in.ID, "reason", in.Reason)
		}
	}
	if len(infos) > 0 {
		a.log.Info("re-attached to existing VMs", "vms", len(infos), "running", running, "unreachable", unreachable)
	}
}

// heartbeatLoop renews the lease and reports inventory and usage. The
// driver is sampled in the background: a driver call that blocks (a VM
// stopping slowly holds its lock) must never let the lease expire, so a
// beat goes out on time with the newest sample there is. Beats are due
// one interval after the send of the last one that succeeded, however
// long its answer or the next sample took (the fence timer runs from
// that send too), and the driver is sampled ahead of the due time; a
// beat that failed is tried again after a short backoff.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	bo := newBackoff(200*time.Millisecond, 10*time.Second)
	s := &sampler{a: a, u: newUsageMeter()}
	next := time.Now() // when the next beat is due
	for {
		budget := max(a.hbInterval()/2, 500*time.Millisecond)
		if lead := time.Until(next) - budget; lead > 0 && sleepCtx(ctx, lead) != nil {
			return
		}
		hb := s.sample(ctx, max(time.Until(next), minSampleWait))
		if wait := time.Until(next); wait > 0 && sleepCtx(ctx, wait) != nil {
			return
		}
		var resp api.HeartbeatResponse
		sent := time.Now()
		err := a.beat(ctx, hb, &resp)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.log.Warn("heartbeat failed", "err", err)
			next = time.Now().Add(min(bo.next(), a.beatEvery()))
			continue
		}
		a.renewed(sent, resp)
		bo.reset()
		if resp.Power == model.HostPowerStandby && a.sleeps() {
			a.sleepStandby(ctx)
			next = time.Now()
			continue
		}
		next = sent.Add(a.beatEvery())
	}
}

// minSampleWait is the least a beat waits for a fresh sample.
const minSampleWait = 50 * time.Millisecond

// beatEvery is the time between the sends of two beats: the server's
// interval, but at most half the fence timeout, so that a beat that
// fails has another try before the agent must fence itself (a server
// that stretches the interval for a large fleet caps it there too).
func (a *Agent) beatEvery() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	every := a.hbEvery
	if a.fn.after > 0 {
		every = min(every, max(a.fn.after/2, 500*time.Millisecond))
	}
	return every
}

// beat sends one heartbeat. Each server gets at most heartbeatAttempt to
// answer before the next one is asked (a stalled server must not hold
// the renewals back until the agent fences itself), and the whole beat
// at most that per server.
func (a *Agent) beat(ctx context.Context, hb api.Heartbeat, resp *api.HeartbeatResponse) error {
	per := a.heartbeatAttempt()
	ctx, cancel := context.WithTimeout(withAttemptTimeout(ctx, per), per*time.Duration(max(1, len(a.servers))))
	defer cancel()
	path := api.AgentPrefix + "/heartbeat"
	if a.compact.Load() {
		if b, ok := api.EncodeHeartbeatCompact(&hb); ok {
			err := a.client.do(ctx, http.MethodPut, path, rawBody{b, api.HeartbeatCompactType}, resp)
			if s := httpStatus(err); s != http.StatusBadRequest && s != http.StatusUnsupportedMediaType {
				a.noteAccepts(err, resp)
				return err
			}
			// a server that does not take it (an older one, or another
			// the beat failed over to): JSON, now and until one offers it
			a.compact.Store(false)
			a.log.Info("the server refused the compact heartbeat; sending JSON", "status", httpStatus(err))
		}
	}
	err := a.client.do(ctx, http.MethodPut, path, hb, resp)
	a.noteAccepts(err, resp)
	return err
}

// noteAccepts remembers whether the server that answered a beat takes
// the compact body (a server offers it in every answer; the agent sends
// JSON until one does, as a server of before the compact form expects).
func (a *Agent) noteAccepts(err error, resp *api.HeartbeatResponse) {
	if err == nil {
		a.compact.Store(slices.Contains(resp.Accepts, api.HeartbeatCompactType))
	}
}

// heartbeatAttempt is how long one server may take to answer a
// heartbeat: a quarter of the fence timeout (so that the agent tries
// every server of three well within it), between 1 s and 5 s; 5 s before
// a server told the fence timeout.
func (a *Agent) heartbeatAttempt() time.Duration {
	a.mu.Lock()
	after := a.fn.after
	a.mu.Unlock()
	if after <= 0 {
		return 5 * time.Second
	}
	return min(max(after/4, time.Second), 5*time.Second)
}

// sampler collects heartbeat contents from the driver, one collection at
// a time, and hands out the newest one.
type sampler struct {
	a       *Agent
	u       *usageMeter
	mu      sync.Mutex
	last    *api.Heartbeat
	running chan struct{} // open while a collection runs
}

// sample starts a collection unless one runs, waits up to budget for it,
// and returns the newest heartbeat (a bare one before the first sample).
func (s *sampler) sample(ctx context.Context, budget time.Duration) api.Heartbeat {
	s.mu.Lock()
	done := s.running
	if done == nil {
		done = make(chan struct{})
		s.running = done
		go func() {
			hb, err := s.a.heartbeat(ctx, s.u)
			s.mu.Lock()
			if err == nil {
				s.last = &hb
			} else if ctx.Err() == nil {
				s.a.log.Warn("sampling the driver failed", "err", err)
			}
			s.running = nil
			s.mu.Unlock()
			close(done)
		}()
	}
	s.mu.Unlock()
	s.mu.Lock()
	if s.last == nil {
		budget = max(budget, firstSampleBudget)
	}
	s.mu.Unlock()
	t := time.NewTimer(budget)
	defer t.Stop()
	fresh := true
	select {
	case <-done:
	case <-t.C:
		fresh = false
		s.a.log.Debug("driver slow to answer; beating with the previous sample")
	case <-ctx.Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		return api.Heartbeat{Host: s.a.cfg.HostName, Labels: s.a.cfg.Labels, Driver: s.a.cfg.Driver.Name(),
			Address: s.a.cfg.Address, Version: s.a.cfg.Version}
	}
	hb := *s.last
	if !fresh {
		// Old VM reports could roll back what converge reported since.
		hb.VMs = nil
	}
	return hb
}

// firstSampleBudget is how long the first beat waits for the driver
// before it goes out bare (without inventory), well inside a lease.
const firstSampleBudget = 4 * time.Second

func (a *Agent) hbInterval() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hbEvery
}

// assignmentsLoop long-polls the VMs assigned to this host.
func (a *Agent) assignmentsLoop(ctx context.Context) {
	bo := newBackoff(200*time.Millisecond, 10*time.Second)
	var after int64
	for {
		pctx, cancel := context.WithTimeout(ctx, a.cfg.PollWait+15*time.Second)
		var as api.Assignments
		path := fmt.Sprintf("%s/assignments?after=%d&wait=%s&delta=true", api.AgentPrefix, after, a.cfg.PollWait)
		err := a.client.do(pctx, http.MethodGet, path, nil, &as)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.log.Warn("assignments poll failed", "err", err)
			if sleepCtx(ctx, bo.next()) != nil {
				return
			}
			continue
		}
		bo.reset()
		after = as.Revision
		a.setAssignments(as)
	}
}

// setAssignments takes an assignments answer: every VM of the host, or
// a delta (the VMs changed since the last answer, and those that left).
func (a *Agent) setAssignments(as api.Assignments) {
	a.ops.set(as.Snapshots)
	a.mu.Lock()
	m := make(map[string]*model.VM, len(as.VMs))
	if as.Delta {
		for k, v := range a.assigned {
			m[k] = v
		}
		for _, k := range as.Removed {
			delete(m, k)
		}
	}
	for i := range as.VMs {
		v := &as.VMs[i]
		if v.Project == "" {
			v.Project = api.DefaultProject
		}
		// a report's answer may have given a newer version already
		if held := a.assigned[v.Key()]; held != nil && held.UID == v.UID && held.Revision > v.Revision {
			v = held
		}
		m[v.Key()] = v
	}
	for key, vm := range m {
		// A forced stop does not wait for a graceful one in progress.
		if st := a.vms[key]; st != nil && st.stopCancel != nil && vm.Spec.StopForce {
			st.stopCancel()
		}
	}
	a.assigned = m
	a.haveList = true
	a.rev = as.Revision
	a.mu.Unlock()
	a.wake()
}

func (a *Agent) wake() {
	a.wakeLocked()
}

// wakeLocked is wake for callers that hold a.mu (it takes no lock).
func (a *Agent) wakeLocked() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Assigned returns how many VMs the last assignment listed (for tests and
// status output).
func (a *Agent) Assigned() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.assigned)
}

// vmID is the driver id of a VM: "<project>.<name>" (both DNS labels, so
// the dot is unambiguous).
func vmID(project, name string) string { return project + "." + name }

// splitID reverses vmID.
func splitID(id string) (project, name string, ok bool) {
	return strings.Cut(id, ".")
}

// hostname returns the OS host name as a DNS label, for defaults.
func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "host"
	}
	h = strings.ToLower(strings.SplitN(h, ".", 2)[0])
	if model.ValidName("host", h) != nil {
		return "host"
	}
	return h
}

// DefaultHostName is the host's name when none is configured: the OS host
// name as a DNS label.
func DefaultHostName() string { return hostname() }

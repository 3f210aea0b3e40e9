// Package fleet runs many simulated hosts against vpool servers over the
// real agent protocol and mutual TLS: each host joins with a join token,
// holds its own key and certificate and one HTTP/2 connection, sends
// heartbeats with its inventory and the usage of its VMs (replayed from
// CPU traces such as PlanetLab's), long-polls its assignments and
// reports its VMs running, stopped or gone. It is light enough that
// 10,000 hosts and 100,000 VMs run on a laptop beside the server (vpool
// dev --sim-hosts, vpool fleet, the scale benchmarks): a host is a
// goroutine a poll and a connection, not an agent with a driver. Fleet
// hosts hold the long polls a real agent holds (assignments, migrations,
// consoles, backups) but act only on their assignments: they do not
// migrate VMs, serve consoles or take snapshots.
//
// It speaks the API only: it imports internal/api, internal/model,
// internal/pki and internal/trace, never the store, the state layer,
// the server or the controllers.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/trace"
)

// ErrConfig says a Config is unusable.
var ErrConfig = errors.New("fleet: bad config")

// Defaults of Config.
const (
	DefaultPrefix       = "fleet"
	DefaultPollWait     = 30 * time.Second
	DefaultTraceStep    = 30 * time.Second
	DefaultJoinParallel = 32
	// hostsPerToken is how many hosts one join token joins: fewer than
	// it could (api.MaxJoinTokenUses), so that the joins running at once
	// spend uses of different tokens (each use is a compare-and-swap on
	// its token's key).
	hostsPerToken = 100
)

// DefaultCapacity is a fleet host's inventory unless configured.
var DefaultCapacity = model.Resources{CPUs: 64, Memory: 256 * model.GiB, Disk: 4 * model.TiB}

// Config configures a Fleet. Servers and Tokens are required.
type Config struct {
	// Servers are agent listener URLs (https://host:port). Host i talks
	// to Servers[i mod len] and moves to the next one when it fails.
	Servers []string
	// Tokens returns a join token that joins at least 100 hosts; it is
	// called once per 100 hosts.
	Tokens func(ctx context.Context) (string, error)
	// Hosts is how many hosts to run, named Prefix-00001...
	Hosts  int
	Prefix string
	// Capacity is each host's inventory (default DefaultCapacity).
	Capacity model.Resources
	// Labels are reported by every host (the operator's labels win).
	Labels map[string]string
	// Trace gives each VM a CPU pattern (VM i of the trace, chosen by a
	// hash of the VM's name); nil: every VM at 10%. One sample lasts
	// TraceStep (default 30s: a PlanetLab day in 2.4 hours).
	Trace     *trace.Trace
	TraceStep time.Duration
	// Workers caps the heartbeats in flight at once; 0 (the default):
	// no cap, each host beats on its own schedule as a real agent does
	// (a cap of 64 held 1,000 hosts under 1,000 beats a second once a
	// round trip took over 64 ms: docs/scale.md).
	Workers int
	// PollWait is the long poll's wait (default 30s).
	PollWait time.Duration
	// OnlyAssignments: each host long-polls its assignments only, as the
	// fleet did before the ninth round, not also the migrations, consoles
	// and backups a real agent polls (for comparisons with old figures).
	OnlyAssignments bool
	// JoinParallel is how many hosts join at once (default 32).
	JoinParallel int
	Logger       *slog.Logger
	Version      string
	// StateDir keeps the hosts' keys and certificates across restarts
	// ("": in memory only).
	StateDir string
	// JSONHeartbeats keeps heartbeats in JSON even to a server that
	// takes the compact form (api.HeartbeatCompactType), as older agents
	// send them.
	JSONHeartbeats bool
}

func (c *Config) defaults() error {
	switch {
	case len(c.Servers) == 0:
		return fmt.Errorf("%w: no server", ErrConfig)
	case c.Tokens == nil:
		return fmt.Errorf("%w: no join tokens", ErrConfig)
	case c.Hosts < 0:
		return fmt.Errorf("%w: hosts must not be negative (got %d)", ErrConfig, c.Hosts)
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if err := model.ValidName("prefix", c.Prefix+"-00001"); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if c.Capacity == (model.Resources{}) {
		c.Capacity = DefaultCapacity
	}
	if c.TraceStep <= 0 {
		c.TraceStep = DefaultTraceStep
	}
	if c.Workers < 0 {
		return fmt.Errorf("%w: workers must not be negative (got %d)", ErrConfig, c.Workers)
	}
	if c.PollWait <= 0 {
		c.PollWait = DefaultPollWait
	}
	if c.JoinParallel <= 0 {
		c.JoinParallel = DefaultJoinParallel
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Trace != nil {
		if err := c.Trace.Validate(); err != nil {
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	return nil
}

// Fleet is a set of simulated hosts.
type Fleet struct {
	cfg   Config
	log   *slog.Logger
	hosts []*host
	start time.Time
	stats stats
	// joined counts hosts with an identity (Join's progress).
	joined atomic.Int64
	// inFlight counts the beats sent and not yet answered
	inFlight atomic.Int64
}

// New checks cfg; nothing runs until Join and Run.
func New(cfg Config) (*Fleet, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg, log: cfg.Logger.With("component", "fleet")}
	for i := range cfg.Hosts {
		f.hosts = append(f.hosts, &host{f: f, name: HostName(cfg.Prefix, i), server: i % len(cfg.Servers), vms: map[string]*simVM{}})
	}
	if err := f.loadIdentities(); err != nil {
		return nil, err
	}
	return f, nil
}

// HostName is the name of fleet host i (0-based) with prefix.
func HostName(prefix string, i int) string { return fmt.Sprintf("%s-%05d", prefix, i+1) }

// Names returns the hosts' names.
func (f *Fleet) Names() []string {
	out := make([]string, len(f.hosts))
	for i, h := range f.hosts {
		out[i] = h.name
	}
	return out
}

// Joined is how many hosts hold an identity.
func (f *Fleet) Joined() int { return int(f.joined.Load()) }

// Join joins every host that holds no identity yet: a key, a CSR and one
// join call each, JoinParallel at a time, one token per 100 hosts.
func (f *Fleet) Join(ctx context.Context) error {
	return f.joinAll(ctx, func(*host) {})
}

// joinAll joins the hosts without an identity and calls ready for every
// host once it has one (at once for those that had one); each join takes
// one use of its token, a compare-and-swap on one key, so the joins
// running at once use different tokens.
func (f *Fleet) joinAll(ctx context.Context, ready func(*host)) error {
	var todo []*host
	for _, h := range f.hosts {
		if h.client != nil {
			ready(h)
		} else {
			todo = append(todo, h)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	var tokens []string
	for i := 0; i < len(todo); i += hostsPerToken {
		tok, err := f.cfg.Tokens(ctx)
		if err != nil {
			return fmt.Errorf("fleet: join token: %w", err)
		}
		tokens = append(tokens, tok)
	}
	work := make(chan int)
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range f.cfg.JoinParallel {
		wg.Go(func() {
			for i := range work {
				if err := todo[i].join(ctx, tokens[i%len(tokens)]); err != nil {
					once.Do(func() { first = err })
					continue
				}
				f.joined.Add(1)
				ready(todo[i])
			}
		})
	}
	for i := range todo {
		select {
		case work <- i:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	if first != nil {
		return first
	}
	f.saveIdentities()
	return ctx.Err()
}

// Run runs every host until ctx ends, joining those without an identity
// first (each starts as soon as it joined): a long poll per host, and its
// heartbeats, each host's first beat at a random point of the first 3 s.
func (f *Fleet) Run(ctx context.Context) error {
	f.start = time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	started := make(chan *host, 1024)
	var slots chan struct{}
	if f.cfg.Workers > 0 {
		slots = make(chan struct{}, f.cfg.Workers)
	}
	beat := func(ctx context.Context, h *host) time.Time {
		if slots != nil {
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				return time.Now()
			}
		}
		f.stats.inFlight(f.inFlight.Add(1))
		defer f.inFlight.Add(-1)
		return h.beat(ctx)
	}
	wg.Go(func() { f.schedule(ctx, started, beat) })
	err := f.joinAll(ctx, func(h *host) {
		wg.Go(func() { h.pollLoop(ctx) })
		if !f.cfg.OnlyAssignments {
			for _, p := range sidePolls {
				wg.Go(func() { h.sideLoop(ctx, p) })
			}
		}
		select {
		case started <- h:
		case <-ctx.Done():
		}
	})
	if err != nil && ctx.Err() == nil {
		cancel()
		return err
	}
	<-ctx.Done()
	for _, h := range f.hosts {
		if h.client != nil {
			h.client.CloseIdleConnections()
		}
	}
	return nil
}

// firstBeatSpread spreads the hosts' first beats.
const firstBeatSpread = 3 * time.Second

// schedule starts each host's beat when it is due, in a goroutine of its
// own (as every real agent beats on its own: nothing here caps the beats
// in flight), and takes the host back when the beat returns the time its
// next one is due; a host has one beat in flight at most. Hosts join the
// schedule as they start. It returns once ctx ended and its beats did.
func (f *Fleet) schedule(ctx context.Context, started <-chan *host, beat func(context.Context, *host) time.Time) {
	q := newBeatQueue()
	back := make(chan beatItem, 1024)
	var beats sync.WaitGroup
	defer beats.Wait()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		h, at := q.peek()
		if h != nil && !time.Now().Before(at) {
			q.pop()
			beats.Go(func() {
				next := beat(ctx, h)
				select {
				case back <- beatItem{h, next}:
				case <-ctx.Done():
				}
			})
			continue
		}
		t.Reset(time.Until(at))
		select {
		case <-ctx.Done():
			return
		case nh := <-started:
			q.push(nh, time.Now().Add(time.Duration(rand.Int64N(int64(firstBeatSpread)))))
		case b := <-back:
			q.push(b.h, b.at)
		case <-t.C:
		}
	}
}

// elapsed is the time since Run started, for trace replay.
func (f *Fleet) elapsed() time.Duration { return time.Since(f.start) }

package scheduler

import (
	"fmt"
	"strings"
	"sync"

	"github.com/vpool/vpool/internal/model"
)

// Factory makes a plugin.
type Factory func() Plugin

// Registry maps plugin names to factories.
type Registry map[string]Factory

// Builtins returns a fresh registry of the built-in plugins. Add your own
// to it and pass it WithRegistry.
func Builtins() Registry {
	return Registry{
		"hoststate": func() Plugin { return HostState{} },
		"pin":       func() Plugin { return Pin{} },
		"labels":    func() Plugin { return Labels{} },
		"fit":       func() Plugin { return Fit{} },
		"storage":   func() Plugin { return Storage{} },
		"network":   func() Plugin { return Network{} },
		"isolation": func() Plugin { return Isolation{} },
		"affinity":  func() Plugin { return Affinity{} },
		"binpack":   func() Plugin { return Binpack{} },
		"spread":    func() Plugin { return Spread{} },
		"balance":   func() Plugin { return Balance{} },
		"energy":    func() Plugin { return Energy{} },
		"scarcity":  func() Plugin { return Scarcity{} },
	}
}

// DefaultPlugins lists the plugins of a policy's strategy, filters in the
// order they run (cheap and decisive first), then scores.
func DefaultPlugins(strategy string) []string {
	pack := "binpack"
	if strings.EqualFold(strategy, "spread") {
		pack = "spread"
	}
	return []string{"hoststate", "pin", "labels", "fit", "storage", "network", "isolation", "affinity", pack, "balance", "energy", "scarcity"}
}

// DefaultWeights are the score weights used when Policy.Weights does not
// name a plugin. Under the spread strategy energy defaults to 0.
func DefaultWeights() map[string]float64 {
	return map[string]float64{"binpack": 1, "spread": 1, "balance": 0.25, "energy": 0.25, "labels": 1, "affinity": 1, "scarcity": 1}
}

// Scheduler places VMs on a Snapshot with a fixed set of plugins. It holds
// no cluster state and is safe for concurrent use (on distinct snapshots,
// or on one that nobody changes meanwhile).
type Scheduler struct {
	policy  model.Policy
	spread  bool
	filters []Filter
	scorers []Scorer
	weights []float64
	// slots of the filters the engine accounts for without visiting hosts
	slotState, slotFit, slotLabels, slotAffinity, slotPin int

	feasibleTarget int // stop after this many feasible hosts ...
	maxExamine     int // ... or after this many examined, once one is feasible
	topN           int // candidates kept in the explanation
	cycles         sync.Pool
}

// Option configures New.
type Option func(*options)

type options struct {
	plugins              []string
	registry             Registry
	feasible, maxExamine int
	topN                 int
}

// WithPlugins chooses the plugins by name, filters in order. hoststate and
// fit are always on (the engine's index is built on them).
func WithPlugins(names ...string) Option { return func(o *options) { o.plugins = names } }

// WithRegistry replaces the built-in registry.
func WithRegistry(r Registry) Option { return func(o *options) { o.registry = r } }

// WithSampling sets how many feasible hosts a decision looks for before it
// stops (default 16) and after how many examined hosts it settles for
// fewer (default 512). A VM that fits nowhere is always checked against
// every host.
func WithSampling(feasible, maxExamine int) Option {
	return func(o *options) { o.feasible, o.maxExamine = feasible, maxExamine }
}

// WithCandidates sets how many top candidates an explanation lists (default 3).
func WithCandidates(n int) Option { return func(o *options) { o.topN = n } }

// New builds a scheduler for a cluster policy.
func New(policy model.Policy, opts ...Option) (*Scheduler, error) {
	if err := policy.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPolicy, err)
	}
	o := options{registry: Builtins(), feasible: 16, maxExamine: 512, topN: 3}
	for _, f := range opts {
		f(&o)
	}
	if o.plugins == nil {
		o.plugins = DefaultPlugins(policy.Strategy)
	}
	s := &Scheduler{
		policy: policy, spread: strings.EqualFold(policy.Strategy, "spread"),
		slotState: -1, slotFit: -1, slotLabels: -1, slotAffinity: -1, slotPin: -1,
		feasibleTarget: max(o.feasible, 1), maxExamine: max(o.maxExamine, 1), topN: max(o.topN, 1),
	}
	names := o.plugins
	if !contains(names, "hoststate") {
		names = append([]string{"hoststate"}, names...)
	}
	if !contains(names, "fit") {
		names = append([]string{"fit"}, names...)
	}
	weights := DefaultWeights()
	if s.spread {
		// energy favours hosts already running VMs: consolidation, the
		// opposite of spreading. Off under spread unless the policy asks.
		weights["energy"] = 0
	}
	for k, w := range policy.Weights {
		weights[k] = w
	}
	for _, name := range names {
		mk, found := o.registry[name]
		if !found {
			return nil, fmt.Errorf("%w: %q", ErrUnknownPlugin, name)
		}
		if err := s.add(mk(), weights); err != nil {
			return nil, err
		}
	}
	s.cycles.New = func() any { return &Cycle{} }
	return s, nil
}

func (s *Scheduler) add(p Plugin, weights map[string]float64) error {
	if f, isFilter := p.(Filter); isFilter {
		if len(s.filters) == maxFilters {
			return fmt.Errorf("scheduler: more than %d filters", maxFilters)
		}
		slot := len(s.filters)
		switch p.Name() {
		case "hoststate":
			s.slotState = slot
		case "fit":
			s.slotFit = slot
		case "labels":
			s.slotLabels = slot
		case "affinity":
			s.slotAffinity = slot
		case "pin":
			s.slotPin = slot
		}
		s.filters = append(s.filters, f)
	}
	if sc, isScorer := p.(Scorer); isScorer {
		w, set := weights[p.Name()]
		if !set {
			w = 1
		}
		if w > 0 {
			s.scorers = append(s.scorers, sc)
			s.weights = append(s.weights, w)
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Plugins names the active filters then the active scorers.
func (s *Scheduler) Plugins() (filters, scorers []string) {
	for _, f := range s.filters {
		filters = append(filters, f.Name())
	}
	for _, sc := range s.scorers {
		scorers = append(scorers, sc.Name())
	}
	return filters, scorers
}

// Decision is the outcome of placing one VM.
type Decision struct {
	Key string
	// Host is the chosen host; "" when the VM fits nowhere (not an error:
	// it stays pending with its Explanation) or on Err.
	Host        string
	Explanation *model.Explanation
	// Err is set when the request or a plugin was broken.
	Err  error
	Spec *model.VMSpec

	host int32
	d    demand
}

// Placed reports whether the decision chose a host.
func (d *Decision) Placed() bool { return d.Err == nil && d.Host != "" }

// Place decides where one VM goes. It does not change the snapshot: call
// snap.Assume(decision) to commit it there (PlaceBatch does).
func (s *Scheduler) Place(snap *Snapshot, r Request) Decision {
	return s.place(snap, r, nil)
}

// place decides for r; extra, when set, is added to r's demand while
// searching (a hard-affinity gang sizes its first host for all members).
func (s *Scheduler) place(snap *Snapshot, r Request, extra *demand) Decision {
	c := s.cycles.Get().(*Cycle)
	defer s.cycles.Put(c)
	c.reset(snap)
	if err := c.compile(r); err != nil {
		return Decision{Key: r.Key, Spec: r.Spec, Err: err, host: -1}
	}
	own := c.d
	if extra != nil {
		c.d.cpu += extra.cpu
		c.d.mem += extra.mem
		c.d.disk += extra.disk
		c.d.cpuRes += extra.cpuRes
		c.d.memRes += extra.memRes
	}
	s.search(c, r.Exhaustive)
	d := s.conclude(c)
	d.Key, d.Spec, d.d = r.Key, r.Spec, own
	return d
}

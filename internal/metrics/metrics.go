// Package metrics holds vpool's Prometheus metrics on a registry of their
// own (never the global one): API request latency by route and code,
// reconcile errors by controller (controllers increment
// ReconcileErrors), and gauges of hosts by state and VMs by phase that are
// computed by a function the server supplies — at most once per CountTTL,
// however often and however many scrapers come, so that a scrape does not
// cost a scan of every VM. It imports the Prometheus client and the
// standard library only.
package metrics

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Counts are the state gauges at one scrape.
type Counts struct {
	HostsByState map[string]int
	VMsByPhase   map[string]int
}

// CountFunc computes Counts (from the store, at scrape time).
type CountFunc func(ctx context.Context) (Counts, error)

// Metrics is the set of vpool metrics and their registry.
type Metrics struct {
	Registry *prometheus.Registry
	// APILatency observes request durations in seconds, labelled by route
	// pattern and HTTP status code.
	APILatency *prometheus.HistogramVec
	// ReconcileErrors counts failed reconcile passes by controller name.
	ReconcileErrors *prometheus.CounterVec
	// StoreChanges counts the store's changes this server's watch saw, by
	// kind (the key's first segment under /vpool/: vms, hosts, samples,
	// events...): what writes etcd, and how often. StoreRevision is the
	// store revision the watch is at (its rate is transactions a second).
	StoreChanges  *prometheus.CounterVec
	StoreRevision prometheus.Gauge
	// StoreTxns counts the store's transactions (revisions) this
	// server's watch saw, by the kinds of key each changed ("alloc+events+vms"
	// is a placement group, "events+vms" a group of status reports):
	// how many transactions a placed VM costs, and of which sort.
	StoreTxns *prometheus.CounterVec
	// GateCommits observes how long each group commit of the placement
	// gate took (its re-check and its transaction); GatePlacements counts
	// the placements those groups carried (over the commits' count: the
	// mean group).
	GateCommits    prometheus.Histogram
	GatePlacements prometheus.Counter

	hosts *prometheus.Desc
	vms   *prometheus.Desc
	mu    sync.Mutex
	count CountFunc
	ttl   time.Duration
	now   func() time.Time

	// computeMu serialises computations: scrapes that arrive together
	// share one. cached/cachedAt are guarded by mu.
	computeMu sync.Mutex
	cached    *Counts
	cachedAt  time.Time
}

// DefaultCountTTL is how long computed state gauges are served before
// they are computed again (Prometheus scrapes every 15 s by default).
const DefaultCountTTL = 10 * time.Second

// New returns the metrics, registered with a fresh registry together
// with the Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		APILatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "vpool", Name: "api_request_duration_seconds",
			Help:    "Latency of user and agent API requests by route and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "code"}),
		ReconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vpool", Name: "reconcile_errors_total",
			Help: "Reconcile passes that failed, by controller.",
		}, []string{"controller"}),
		StoreChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vpool", Name: "store_changes_total",
			Help: "Changes of the store (keys put or deleted) seen by this server, by kind of key.",
		}, []string{"kind"}),
		StoreTxns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "vpool", Name: "store_txns_total",
			Help: "Transactions of the store seen by this server, by the kinds of key each changed (joined with +).",
		}, []string{"kinds"}),
		GateCommits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "vpool", Name: "gate_commit_seconds",
			Help:    "Duration of the placement gate's group commits (re-check and transaction).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		GatePlacements: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "vpool", Name: "gate_placements_total",
			Help: "Placements the gate's group commits carried (committed or lost).",
		}),
		StoreRevision: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "vpool", Name: "store_revision",
			Help: "The store revision this server has seen everything up to.",
		}),
		hosts: prometheus.NewDesc("vpool_hosts", "Hosts by state.", []string{"state"}, nil),
		vms:   prometheus.NewDesc("vpool_vms", "VMs by phase.", []string{"phase"}, nil),
		ttl:   DefaultCountTTL,
		now:   time.Now,
	}
	m.Registry.MustRegister(m.APILatency, m.ReconcileErrors, m.StoreChanges, m.StoreTxns, m.GateCommits, m.GatePlacements, m.StoreRevision, stateCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// SetCounter installs the function that computes the state gauges.
func (m *Metrics) SetCounter(f CountFunc) {
	m.mu.Lock()
	m.count, m.cached = f, nil
	m.mu.Unlock()
}

// SetCountCache sets how long computed gauges are served (0: compute on
// every scrape) and the clock that measures it.
func (m *Metrics) SetCountCache(ttl time.Duration, now func() time.Time) {
	m.mu.Lock()
	m.ttl, m.now, m.cached = ttl, now, nil
	m.mu.Unlock()
}

// counts returns the cached gauges while fresh, else computes them once
// for every scrape waiting.
func (m *Metrics) counts() (Counts, bool, error) {
	fresh := func() (Counts, bool, bool) {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.count == nil {
			return Counts{}, false, true
		}
		if m.cached != nil && m.now().Sub(m.cachedAt) < m.ttl {
			return *m.cached, true, true
		}
		return Counts{}, false, false
	}
	if c, ok, done := fresh(); done {
		return c, ok, nil
	}
	m.computeMu.Lock()
	defer m.computeMu.Unlock()
	if c, ok, done := fresh(); done { // computed while we waited
		return c, ok, nil
	}
	m.mu.Lock()
	f := m.count
	m.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := f(ctx)
	if err != nil {
		return c, false, err
	}
	m.mu.Lock()
	m.cached, m.cachedAt = &c, m.now()
	m.mu.Unlock()
	return c, true, nil
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// GateCommit observes one group commit of the placement gate.
func (m *Metrics) GateCommit(placements int, took time.Duration) {
	m.GateCommits.Observe(took.Seconds())
	m.GatePlacements.Add(float64(placements))
}

// ReconcileError counts one failed reconcile of controller.
func (m *Metrics) ReconcileError(controller string) {
	m.ReconcileErrors.WithLabelValues(controller).Inc()
}

// KnownHostStates and KnownPhases are always exported (as 0 when none),
// so dashboards see every series.
var (
	KnownHostStates = []string{"ready", "maintenance", "standby", "down", "fenced"}
	KnownPhases     = []string{"pending", "scheduling", "creating", "running", "stopping", "stopped", "failed", "deleting", "paused"}
)

type stateCollector struct{ m *Metrics }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.m.hosts
	ch <- c.m.vms
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts, ok, err := c.m.counts()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.m.vms, err)
		return
	}
	if !ok {
		return
	}
	emit := func(d *prometheus.Desc, known []string, got map[string]int) {
		seen := map[string]bool{}
		for _, k := range known {
			seen[k] = true
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(got[k]), k)
		}
		for k, v := range got {
			if !seen[k] {
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), k)
			}
		}
	}
	emit(c.m.hosts, KnownHostStates, counts.HostsByState)
	emit(c.m.vms, KnownPhases, counts.VMsByPhase)
}

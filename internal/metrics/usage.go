package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// UsageLine is one VM's metered usage this month (docs/metering.md) and
// the host it last ran on ("" when it was never placed).
type UsageLine struct {
	Project, VM, Host                               string
	VCPUHours, MemGiBHours, DiskGiBHours, EnergyKWh float64
	CO2Grams                                        float64
	NetBytes                                        int64
}

// UsageFunc reads the current month's usage per VM (from the store).
type UsageFunc func(ctx context.Context) ([]UsageLine, error)

// usageFigures are one total of the six exported figures, in the order
// of usageMetrics.
type usageFigures [6]float64

func (f *usageFigures) add(l UsageLine) {
	f[0] += l.VCPUHours
	f[1] += l.MemGiBHours
	f[2] += l.DiskGiBHours
	f[3] += float64(l.NetBytes)
	f[4] += l.EnergyKWh
	f[5] += l.CO2Grams
}

// usageTotal is the usage of one project or host.
type usageTotal struct {
	name string
	f    usageFigures
}

// usageTotals are the month's usage summed per project and per host
// (in no order: the registry sorts what it gathers).
type usageTotals struct{ projects, hosts []usageTotal }

// sumUsage sums lines per project and per host (lines of VMs placed
// nowhere count only in their project).
func sumUsage(lines []UsageLine) usageTotals {
	projects, hosts := map[string]*usageFigures{}, map[string]*usageFigures{}
	add := func(m map[string]*usageFigures, k string, l UsageLine) {
		f := m[k]
		if f == nil {
			f = new(usageFigures)
			m[k] = f
		}
		f.add(l)
	}
	for _, l := range lines {
		add(projects, l.Project, l)
		if l.Host != "" {
			add(hosts, l.Host, l)
		}
	}
	flat := func(m map[string]*usageFigures) []usageTotal {
		out := make([]usageTotal, 0, len(m))
		for k, f := range m {
			out = append(out, usageTotal{k, *f})
		}
		return out
	}
	return usageTotals{flat(projects), flat(hosts)}
}

// usageCollector exports metered usage summed per project, as counters
// that start again from zero each month (Prometheus reads the drop as a
// counter reset), and summed per host the VMs last ran on, as gauges (a
// VM that moves takes its month's usage to its new host, so a host's
// figure may fall). Per-VM usage is the metering API's (GET
// /api/v1/usage?vms=true): as series it was six a VM, 600,000 at 100,000
// VMs (docs/scale.md). A scrape reads the store at most once per ttl and
// keeps only the totals.
type usageCollector struct {
	fn      UsageFunc
	ttl     time.Duration
	now     func() time.Time
	project [len(usageFigures{})]*prometheus.Desc
	host    [len(usageFigures{})]*prometheus.Desc

	mu       sync.Mutex
	cached   *usageTotals
	cachedAt time.Time
}

// usageMetrics are the exported figures: name of the project counter,
// name of the host gauge, help.
var usageMetrics = [len(usageFigures{})]struct{ project, host, help string }{
	{"vpool_usage_vcpu_hours_total", "vpool_host_usage_vcpu_hours", "vCPU-hours of running VMs this month"},
	{"vpool_usage_memory_gib_hours_total", "vpool_host_usage_memory_gib_hours", "GiB-hours of memory of running VMs this month"},
	{"vpool_usage_disk_gib_hours_total", "vpool_host_usage_disk_gib_hours", "GiB-hours of disk of placed VMs this month"},
	{"vpool_usage_network_bytes_total", "vpool_host_usage_network_bytes", "Bytes received and sent by VMs' NICs this month"},
	{"vpool_usage_energy_kwh_total", "vpool_host_usage_energy_kwh", "kWh attributed to VMs this month (IT energy)"},
	{"vpool_usage_co2_grams_total", "vpool_host_usage_co2_grams", "Grams CO2e of VMs' energy this month (× PUE × grid intensity)"},
}

// SetUsage exports metered usage computed by fn (at most once per
// DefaultUsageTTL).
func (m *Metrics) SetUsage(fn UsageFunc) {
	m.Registry.MustRegister(newUsageCollector(fn, DefaultUsageTTL, time.Now))
}

func newUsageCollector(fn UsageFunc, ttl time.Duration, now func() time.Time) *usageCollector {
	c := &usageCollector{fn: fn, ttl: ttl, now: now}
	for i, u := range usageMetrics {
		c.project[i] = prometheus.NewDesc(u.project, u.help+", per project.", []string{"project"}, nil)
		c.host[i] = prometheus.NewDesc(u.host, u.help+", of the VMs that last ran on each host (a VM that moves takes it along).",
			[]string{"host"}, nil)
	}
	return c
}

// DefaultUsageTTL is how long usage read from the store is served.
const DefaultUsageTTL = 30 * time.Second

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	for i := range c.project {
		ch <- c.project[i]
		ch <- c.host[i]
	}
}

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cached == nil || c.now().Sub(c.cachedAt) >= c.ttl {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		lines, err := c.fn(ctx)
		cancel()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.project[0], err)
			return
		}
		t := sumUsage(lines)
		c.cached, c.cachedAt = &t, c.now()
	}
	for _, t := range c.cached.projects {
		for i, v := range t.f {
			ch <- prometheus.MustNewConstMetric(c.project[i], prometheus.CounterValue, v, t.name)
		}
	}
	for _, t := range c.cached.hosts {
		for i, v := range t.f {
			ch <- prometheus.MustNewConstMetric(c.host[i], prometheus.GaugeValue, v, t.name)
		}
	}
}

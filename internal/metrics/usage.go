package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// UsageLine is one VM's metered usage this month (docs/metering.md).
type UsageLine struct {
	Project, VM                                     string
	VCPUHours, MemGiBHours, DiskGiBHours, EnergyKWh float64
	CO2Grams                                        float64
	NetBytes                                        int64
}

// UsageFunc reads the current month's usage per VM (from the store).
type UsageFunc func(ctx context.Context) ([]UsageLine, error)

// usageCollector exports metered usage as counters per project and VM
// that start again from zero each month (Prometheus reads the drop as
// a counter reset). A scrape reads the store at most once per ttl.
type usageCollector struct {
	fn   UsageFunc
	ttl  time.Duration
	now  func() time.Time
	desc map[string]*prometheus.Desc

	mu       sync.Mutex
	cached   []UsageLine
	cachedAt time.Time
}

// usageMetrics are the exported counters.
var usageMetrics = []struct{ name, help string }{
	{"vpool_usage_vcpu_hours_total", "vCPU-hours of running VMs this month."},
	{"vpool_usage_memory_gib_hours_total", "GiB-hours of memory of running VMs this month."},
	{"vpool_usage_disk_gib_hours_total", "GiB-hours of disk of placed VMs this month."},
	{"vpool_usage_network_bytes_total", "Bytes received and sent by VMs' NICs this month."},
	{"vpool_usage_energy_kwh_total", "kWh attributed to VMs this month (IT energy)."},
	{"vpool_usage_co2_grams_total", "Grams CO2e of VMs' energy this month (× PUE × grid intensity)."},
}

// SetUsage exports metered usage computed by fn (at most once per
// DefaultUsageTTL).
func (m *Metrics) SetUsage(fn UsageFunc) {
	c := &usageCollector{fn: fn, ttl: DefaultUsageTTL, now: time.Now, desc: map[string]*prometheus.Desc{}}
	for _, u := range usageMetrics {
		c.desc[u.name] = prometheus.NewDesc(u.name, u.help, []string{"project", "vm"}, nil)
	}
	m.Registry.MustRegister(c)
}

// DefaultUsageTTL is how long usage read from the store is served.
const DefaultUsageTTL = 30 * time.Second

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.desc {
		ch <- d
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
			ch <- prometheus.NewInvalidMetric(c.desc[usageMetrics[0].name], err)
			return
		}
		c.cached, c.cachedAt = lines, c.now()
	}
	for _, l := range c.cached {
		for _, v := range []struct {
			name string
			v    float64
		}{
			{usageMetrics[0].name, l.VCPUHours}, {usageMetrics[1].name, l.MemGiBHours}, {usageMetrics[2].name, l.DiskGiBHours},
			{usageMetrics[3].name, float64(l.NetBytes)}, {usageMetrics[4].name, l.EnergyKWh}, {usageMetrics[5].name, l.CO2Grams},
		} {
			ch <- prometheus.MustNewConstMetric(c.desc[v.name], prometheus.CounterValue, v.v, l.Project, l.VM)
		}
	}
}

package metrics

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestUsageTotals: the month's usage is exported summed per project
// (counters) and per host the VMs last ran on (gauges), never per VM; a
// VM placed nowhere counts in its project only; the store is read once
// per TTL and an error is not cached.
func TestUsageTotals(t *testing.T) {
	lines := []UsageLine{
		{Project: "alpha", VM: "web", Host: "h1", VCPUHours: 4, MemGiBHours: 8, DiskGiBHours: 40, NetBytes: 12000, EnergyKWh: 2, CO2Grams: 150},
		{Project: "alpha", VM: "db", Host: "h2", DiskGiBHours: 200},
		{Project: "beta", VM: "job", Host: "h2", VCPUHours: 8, MemGiBHours: 16, EnergyKWh: 4, CO2Grams: 2400},
		{Project: "beta", VM: "new", VCPUHours: 1},
	}
	now := time.Unix(1e9, 0)
	reads := 0
	var fail error
	m := New()
	m.Registry.MustRegister(newUsageCollector(func(context.Context) ([]UsageLine, error) {
		reads++
		return lines, fail
	}, 30*time.Second, func() time.Time { return now }))

	tests := []struct{ series, want string }{
		{`vpool_usage_vcpu_hours_total{project="alpha"}`, "4"},
		{`vpool_usage_vcpu_hours_total{project="beta"}`, "9"},
		{`vpool_usage_disk_gib_hours_total{project="alpha"}`, "240"},
		{`vpool_usage_network_bytes_total{project="alpha"}`, "12000"},
		{`vpool_usage_co2_grams_total{project="beta"}`, "2400"},
		{`vpool_host_usage_vcpu_hours{host="h2"}`, "8"},
		{`vpool_host_usage_disk_gib_hours{host="h2"}`, "200"},
		{`vpool_host_usage_memory_gib_hours{host="h1"}`, "8"},
		{`vpool_host_usage_energy_kwh{host="h2"}`, "4"},
		{`vpool_host_usage_co2_grams{host="h1"}`, "150"},
	}
	out := scrape(t, m)
	for _, tc := range tests {
		if !strings.Contains(out, "\n"+tc.series+" "+tc.want+"\n") {
			t.Errorf("scrape lacks %s %s", tc.series, tc.want)
		}
	}
	for _, bad := range []string{`vm="`, `host=""`} {
		if strings.Contains(out, bad) {
			t.Errorf("scrape has a series with %s", bad)
		}
	}
	for _, typ := range []string{"# TYPE vpool_usage_vcpu_hours_total counter", "# TYPE vpool_host_usage_vcpu_hours gauge"} {
		if !strings.Contains(out, typ) {
			t.Errorf("scrape lacks %q", typ)
		}
	}

	lines[0].VCPUHours = 5
	scrape(t, m)
	if reads != 1 {
		t.Fatalf("two scrapes within the TTL read the usage %d times, want 1", reads)
	}
	now = now.Add(30 * time.Second)
	if out := scrape(t, m); reads != 2 || !strings.Contains(out, `vpool_usage_vcpu_hours_total{project="alpha"} 5`+"\n") {
		t.Fatalf("after the TTL: %d reads, alpha's vCPU-hours not 5", reads)
	}
	now, fail = now.Add(30*time.Second), errors.New("store down")
	for range 2 {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 500 {
			t.Fatalf("a failing read answered %d, want 500", rec.Code)
		}
	}
	if reads != 4 {
		t.Fatalf("a failed read was cached: %d reads, want 4", reads)
	}
}

// BenchmarkUsageScrape: one scrape of /metrics with the usage of
// 100,000 VMs on 10,000 hosts in 8 projects (issue 14's fleet), the read
// of the lines excluded: the bytes written, the series and the bytes
// allocated a scrape.
func BenchmarkUsageScrape(b *testing.B) {
	const vms, hosts, projects = 100_000, 10_000, 8
	lines := make([]UsageLine, vms)
	for i := range lines {
		lines[i] = UsageLine{Project: fmt.Sprintf("p%d", i%projects), VM: fmt.Sprintf("vm-%06d", i), Host: fmt.Sprintf("host-%05d", i%hosts),
			VCPUHours: float64(i%8 + 1), MemGiBHours: float64(i % 32), DiskGiBHours: 20, NetBytes: int64(i) * 1000, EnergyKWh: 0.1, CO2Grams: 40}
	}
	m := &Metrics{Registry: prometheus.NewRegistry()}
	// the TTL 0: every scrape sums again, as one every 30 s would
	m.Registry.MustRegister(newUsageCollector(func(context.Context) ([]UsageLine, error) { return lines, nil }, 0, time.Now))
	var before, after runtime.MemStats
	var size, series int
	runtime.ReadMemStats(&before)
	for b.Loop() {
		out := scrape(b, m)
		size, series = len(out), strings.Count(out, "\n")-strings.Count(out, "\n#")
	}
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(size)/1e6, "MB/scrape")
	b.ReportMetric(float64(series), "series")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/1e6, "MB-alloc/scrape")
}

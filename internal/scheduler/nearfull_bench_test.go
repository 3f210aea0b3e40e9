package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// nearFullVMs is how many VMs arrive at the near-full cluster: enough to
// fill what is left and then some (the rest fits nowhere).
const nearFullVMs = 20_000

// nearFullAllocs allocates every usable host of benchHostsHetero to
// 80–95 % of what it may hold (capacity × the policy's or the host's
// ratio), CPU and memory alike.
func nearFullAllocs(rng *rand.Rand, pol model.Policy, hosts []model.Host) []model.Allocation {
	allocs := make([]model.Allocation, 0, len(hosts))
	for i := range hosts {
		h := &hosts[i]
		cpuR, memR := pol.Ratios.CPU, pol.Ratios.Memory
		if h.Ratios.Memory > 0 {
			memR = h.Ratios.Memory
		}
		f := 0.80 + 0.15*rng.Float64()
		cpus := int(f * cpuR * float64(h.Capacity.CPUs))
		memGiB := int64(f * memR * float64(h.Capacity.Memory) / float64(GiB))
		allocs = append(allocs, MakeAlloc(h.Name).Used(cpus, memGiB, 0).VMs(fmt.Sprintf("pre/x-%05d", i)).Obj())
	}
	return allocs
}

// nearFullArrivals: single VMs of 1–32 vCPUs (up to half of the largest
// host's cores) with 2–8 GiB per vCPU (up to 256 GiB, half of the
// largest host's memory), skewed to the small; 10 % require a region,
// 3 % soft anti-affinity with at most 2 per host. The large ones fit
// nowhere once the free room is fragmented.
func nearFullArrivals(rng *rand.Rand, n int) [][]Request {
	out := make([][]Request, 0, n)
	for i := range n {
		cpus := []int{1, 1, 1, 2, 2, 2, 4, 4, 8, 16, 32}[rng.IntN(11)]
		b := MakeVM(fmt.Sprintf("t%d/nf-%06d", i%100, i)).CPUs(cpus).Memory(int64(cpus)*(2<<rng.IntN(3))).Disk(int64(10+rng.IntN(190)), "", "")
		switch p := rng.IntN(100); {
		case p < 10:
			b.Require("region", regions[rng.IntN(3)])
		case p < 13:
			b.Group(fmt.Sprintf("soft-%d", i%500), model.AntiAffinitySoft).MaxPerHost(2)
		}
		out = append(out, []Request{b.Req()})
	}
	return out
}

// BenchmarkPlacementNearFull: the 10,000 heterogeneous hosts of
// BenchmarkPlacement, every usable one 80–95 % allocated, and 20,000 VMs
// up to half a host, many of which fit nowhere (placed-% says how many
// did). The snapshot is built inside the timer (a scheduling pass builds
// one when its cache is cold): placements/s counts it, snapshot-ms shows
// it apart; p99 and p99.9 are of single decisions.
func BenchmarkPlacementNearFull(b *testing.B) {
	pol := model.DefaultPolicy()
	hosts, _ := benchHostsHetero(rand.New(rand.NewPCG(1, 1)), benchHosts)
	allocs := nearFullAllocs(rand.New(rand.NewPCG(4, 4)), pol, hosts)
	arrivals := nearFullArrivals(rand.New(rand.NewPCG(5, 5)), nearFullVMs)
	s, err := New(pol)
	if err != nil {
		b.Fatal(err)
	}
	var last runStats
	var snapTime, total time.Duration
	for b.Loop() {
		t0 := time.Now()
		snap, err := NewSnapshot(pol, hosts, allocs)
		if err != nil {
			b.Fatal(err)
		}
		snapTime = time.Since(t0)
		last = run(s, snap, arrivals)
		total = time.Since(t0)
	}
	b.ReportMetric(float64(last.decisions)/total.Seconds(), "placements/s")
	b.ReportMetric(float64(snapTime.Microseconds())/1e3, "snapshot-ms")
	b.ReportMetric(float64(last.quantile(0.99).Nanoseconds())/1e3, "p99-us")
	b.ReportMetric(float64(last.quantile(0.999).Nanoseconds())/1e3, "p999-us")
	b.ReportMetric(100*float64(last.placed)/float64(last.decisions), "placed-%")
}

// The near-full workload is what its name says: the cluster starts at
// 80 % or more of what it may hold, and part of the VMs fit nowhere.
func TestNearFullWorkload(t *testing.T) {
	pol := model.DefaultPolicy()
	hosts, _ := benchHostsHetero(rand.New(rand.NewPCG(1, 1)), 500)
	allocs := nearFullAllocs(rand.New(rand.NewPCG(4, 4)), pol, hosts)
	var usedCPU, capCPU float64
	for i, a := range allocs {
		capCPU += pol.Ratios.CPU * float64(hosts[i].Capacity.CPUs)
		usedCPU += float64(a.Used.CPUs)
	}
	if f := usedCPU / capCPU; f < 0.8 {
		t.Errorf("cluster allocated %.0f %% of its CPU, want ≥ 80 %%", 100*f)
	}
	snap, err := NewSnapshot(pol, hosts, allocs)
	if err != nil {
		t.Fatal(err)
	}
	s := newSched(t)
	st := run(s, snap, nearFullArrivals(rand.New(rand.NewPCG(5, 5)), 2_000))
	if st.placed == 0 || st.placed == st.decisions {
		t.Errorf("placed %d of %d VMs: want some placed and some fitting nowhere", st.placed, st.decisions)
	}
	if p99, p999 := st.quantile(0.99), st.quantile(0.999); p999 < p99 {
		t.Errorf("p99.9 %s below p99 %s", p999, p99)
	}
}

// quantile of the decisions' latencies (q in [0, 1]).
func (st runStats) quantile(q float64) time.Duration {
	lat := slices.Clone(st.lat)
	slices.Sort(lat)
	return lat[min(len(lat)-1, int(float64(len(lat))*q))]
}

package scheduler

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// The workload, declared as data (as Kubernetes' scheduler_perf does):
// how many hosts and VMs, and the mix.
const (
	benchHosts = 10_000
	benchVMs   = 100_000
)

var (
	regions = []string{"eu", "us", "ap"}
	zones   = []string{"a", "b", "c"}
	domains = []string{"pci", "hipaa", "gov"}
)

// benchHostsHetero: 16–64 cores, 4 or 8 GiB per core, 2–8 TiB disk, three
// regions × three zones, an ssd pool on half, GPUs on 2%, 1% down, 1% in
// maintenance, 0.5% cordoned, 10% with memory ratio 1.5; half of the
// hosts start 0–40% allocated.
func benchHostsHetero(rng *rand.Rand, n int) ([]model.Host, []model.Allocation) {
	var hosts []model.Host
	var allocs []model.Allocation
	for i := range n {
		cores := []int{16, 32, 48, 64}[rng.IntN(4)]
		b := MakeHost().Name(fmt.Sprintf("host-%05d", i)).CPUs(cores).Memory(int64(cores*(4<<rng.IntN(2)))).Disk(2048<<rng.IntN(3)).
			Label("region", regions[rng.IntN(3)]).Label("zone", zones[rng.IntN(3)]).Label("rack", fmt.Sprintf("r%03d", i/40))
		if rng.IntN(2) == 0 {
			b.Label("disk", "ssd").Pool("fast", "ssd", 0)
		}
		if rng.IntN(50) == 0 {
			b.Label("gpu", "a100")
		}
		switch p := rng.IntN(200); {
		case p < 2:
			b.State(model.HostDown)
		case p < 4:
			b.State(model.HostMaintenance)
		case p < 5:
			b.Cordon()
		case p < 25:
			b.Ratios(0, 1.5, 0)
		}
		h := b.Obj()
		hosts = append(hosts, h)
		if rng.IntN(2) == 0 {
			f := rng.Float64() * 0.4
			allocs = append(allocs, MakeAlloc(h.Name).Used(int(f*float64(cores*4)), int64(f*float64(h.Capacity.Memory)/float64(GiB)), 0).VMs("pre/x").Obj())
		}
	}
	return hosts, allocs
}

// benchHostsHomogeneous: identical 64-core, 512GiB, 8TiB hosts (labels and
// pools as above, all ready), so the packing lower bound is well defined.
func benchHostsHomogeneous(rng *rand.Rand, n int) []model.Host {
	var hosts []model.Host
	for i := range n {
		b := MakeHost().Name(fmt.Sprintf("host-%05d", i)).CPUs(64).Memory(512).Disk(8192).
			Label("region", regions[i%3]).Label("zone", zones[(i/3)%3]).Label("disk", "ssd").Pool("fast", "ssd", 0)
		if i%50 == 0 {
			b.Label("gpu", "a100")
		}
		hosts = append(hosts, b.Obj())
	}
	return hosts
}

// benchArrivals: the VM mix, in arrival order, grouped into arrivals (a
// single VM, or an all-or-nothing gang). 1–16 vCPUs (25/30/25/13/7%),
// 0.5–8 GiB per vCPU (max 64 GiB), 10–200 GiB disk; 10% require a region,
// 1% a GPU, 15% prefer a zone, 10% want an ssd-tier disk, 5% in isolation
// domains, 5% with reservations; gangs: hard anti-affinity triples (5%
// of VMs) and hard affinity pairs (2%); 3% soft anti-affinity with at
// most 2 per host.
func benchArrivals(rng *rand.Rand, n int) [][]Request {
	var out [][]Request
	vm := func(i int) *vmBuilder {
		cpus := []int{1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 8, 8, 8, 16}[rng.IntN(20)]
		mib := min(int64(cpus)*(512<<rng.IntN(5)), 64<<10)
		b := MakeVM(fmt.Sprintf("t%d/vm-%06d", i%100, i)).CPUs(cpus).MemoryMiB(mib).Disk(int64(10+rng.IntN(190)), "", "")
		switch p := rng.IntN(100); {
		case p < 10:
			b.Require("region", regions[rng.IntN(3)])
		case p < 11:
			b.Require("gpu", "a100")
		case p < 26:
			b.Prefer("zone", zones[rng.IntN(3)])
		}
		if rng.IntN(10) == 0 {
			b.Disk(50, "", "ssd")
		}
		if rng.IntN(20) == 0 {
			b.Domain(domains[rng.IntN(3)])
		}
		if rng.IntN(20) == 0 {
			b.Reserve(cpus*500, max(mib/2048, 1))
		}
		return b
	}
	for i := 0; i < n; {
		switch p := rng.IntN(1000); {
		case p < 17 && i+3 <= n: // ~5% of VMs in anti-affinity triples
			g := fmt.Sprintf("anti-%d", i)
			out = append(out, []Request{vm(i).Group(g, model.AntiAffinityHard).Req(), vm(i+1).Group(g, model.AntiAffinityHard).Req(), vm(i+2).Group(g, model.AntiAffinityHard).Req()})
			i += 3
		case p < 27 && i+2 <= n: // ~2% in affinity pairs
			g := fmt.Sprintf("pair-%d", i)
			out = append(out, []Request{vm(i).Group(g, model.AffinityHard).Req(), vm(i+1).Group(g, model.AffinityHard).Req()})
			i += 2
		case p < 57:
			out = append(out, []Request{vm(i).Group(fmt.Sprintf("soft-%d", i%500), model.AntiAffinitySoft).MaxPerHost(2).Req()})
			i++
		default:
			out = append(out, []Request{vm(i).Req()})
			i++
		}
	}
	return out
}

type runStats struct {
	decisions, placed int
	elapsed           time.Duration
	lat               []time.Duration // per decision
}

// run places every arrival: singles with Place + Assume, gangs with
// PlaceBatch (their latency is split over their members).
func run(s *Scheduler, snap *Snapshot, arrivals [][]Request) runStats {
	st := runStats{lat: make([]time.Duration, 0, benchVMs)}
	begin := time.Now()
	for _, a := range arrivals {
		t0 := time.Now()
		if len(a) == 1 {
			d := s.Place(snap, a[0])
			if d.Placed() && snap.Assume(d) == nil {
				st.placed++
			}
		} else {
			for _, d := range s.PlaceBatch(snap, a) {
				if d.Placed() {
					st.placed++
				}
			}
		}
		per := time.Since(t0) / time.Duration(len(a))
		for range a {
			st.lat = append(st.lat, per)
		}
		st.decisions += len(a)
	}
	st.elapsed = time.Since(begin)
	return st
}

func (st runStats) p99() time.Duration {
	slices.Sort(st.lat)
	return st.lat[len(st.lat)*99/100]
}

// BenchmarkPlacement: 10,000 heterogeneous hosts, 100,000 VMs, all
// plugins. Targets: ≥ 20,000 placements/s on one core, p99 ≤ 1 ms.
// Variants: binpack (the default policy), spread, and a memory ratio of
// 3.0 that makes CPU the binding resource (the index is on memory).
func BenchmarkPlacement(b *testing.B) {
	hosts, allocs := benchHostsHetero(rand.New(rand.NewPCG(1, 1)), benchHosts)
	arrivals := benchArrivals(rand.New(rand.NewPCG(2, 2)), benchVMs)
	variants := []struct {
		name     string
		strategy string
		memRatio float64
	}{{"binpack", "binpack", 1}, {"spread", "spread", 1}, {"memratio3", "binpack", 3}}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			pol := model.DefaultPolicy()
			pol.Strategy, pol.Ratios.Memory = v.strategy, v.memRatio
			s, err := New(pol)
			if err != nil {
				b.Fatal(err)
			}
			var last runStats
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				snap, err := NewSnapshot(pol, hosts, allocs)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				last = run(s, snap, arrivals)
			}
			b.ReportMetric(float64(last.decisions)/last.elapsed.Seconds(), "placements/s")
			b.ReportMetric(float64(last.p99().Nanoseconds())/1e3, "p99-us")
			b.ReportMetric(float64(last.quantile(0.999).Nanoseconds())/1e3, "p999-us")
			b.ReportMetric(100*float64(last.placed)/float64(last.decisions), "placed-%")
		})
	}
}

// BenchmarkPacking: the same 100,000 VMs in arrival order, binpack, on
// identical hosts; hosts/lower-bound = hosts used / max over CPU, memory
// and disk of ceil(total demand / allocatable per host (capacity ×
// ratio)). Target ≤ 1.05.
func BenchmarkPacking(b *testing.B) {
	arrivals := benchArrivals(rand.New(rand.NewPCG(2, 2)), benchVMs)
	var cpu, mem, disk int64
	for _, a := range arrivals {
		for _, r := range a {
			cpu += int64(r.Spec.VCPUs)
			mem += int64(r.Spec.Memory)
			disk += int64(r.Spec.DiskSize())
		}
	}
	lb := int(max(math.Ceil(float64(cpu)/(64*4)), math.Ceil(float64(mem)/float64(512*GiB)), math.Ceil(float64(disk)/float64(8192*GiB))))
	hosts := benchHostsHomogeneous(rand.New(rand.NewPCG(3, 3)), lb*3/2)
	s := newSched(b)
	var used int
	var last runStats
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		snap := newSnap(b, hosts)
		b.StartTimer()
		last = run(s, snap, arrivals)
		used = 0
		for h := range snap.hosts {
			if snap.hosts[h].vms > 0 {
				used++
			}
		}
	}
	b.ReportMetric(float64(used)/float64(lb), "hosts/lower-bound")
	b.ReportMetric(float64(lb), "lower-bound-hosts")
	b.ReportMetric(100*float64(last.placed)/float64(last.decisions), "placed-%")
	b.ReportMetric(float64(last.decisions)/last.elapsed.Seconds(), "placements/s")
}

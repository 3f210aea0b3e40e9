package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// randomCluster makes n hosts of mixed size, state, labels and pools, with
// random allocations including domains and groups.
func randomCluster(rng *rand.Rand, n int) ([]model.Host, []model.Allocation) {
	regions := []string{"eu", "us", "ap"}
	var hosts []model.Host
	var allocs []model.Allocation
	for i := range n {
		b := MakeHost().Name(fmt.Sprintf("h%03d", i)).CPUs(8<<rng.IntN(3)).Memory(32<<rng.IntN(3)).Disk(500<<rng.IntN(2)).
			Label("region", regions[rng.IntN(3)])
		if rng.IntN(4) == 0 {
			b.Label("disk", "ssd").Pool("fast", "ssd", int64(rng.IntN(400)))
		}
		if rng.IntN(10) == 0 {
			b.Label("gpu", "yes")
		}
		switch rng.IntN(12) {
		case 0:
			b.State(model.HostDown)
		case 1:
			b.Cordon()
		case 2:
			b.Ratios(1, 1.5, 0)
		}
		h := b.Obj()
		hosts = append(hosts, h)
		if rng.IntN(2) == 0 {
			a := MakeAlloc(h.Name).Used(rng.IntN(h.Capacity.CPUs*4), rng.Int64N(int64(h.Capacity.Memory)/GiB), 0).VMs("x/1")
			switch rng.IntN(4) {
			case 0:
				a.Domain("pci", 1)
			case 1:
				a.Group("p/g", 1)
			}
			allocs = append(allocs, a.Obj())
		}
	}
	return hosts, allocs
}

func randomVM(rng *rand.Rand, i int) Request {
	b := MakeVM(fmt.Sprintf("p/vm%d", i)).CPUs(1<<rng.IntN(5)).MemoryMiB(512<<rng.IntN(7)).Disk(int64(10+rng.IntN(100)), "", "")
	if rng.IntN(3) == 0 {
		b.Require("region", []string{"eu", "us", "ap", "mars"}[rng.IntN(4)])
	}
	if rng.IntN(8) == 0 {
		b.Require("gpu", "yes")
	}
	if rng.IntN(6) == 0 {
		b.Disk(int64(10+rng.IntN(100)), "", "ssd")
	}
	if rng.IntN(6) == 0 {
		b.Domain("pci")
	}
	switch rng.IntN(8) {
	case 0:
		b.Group("g", model.AntiAffinityHard)
	case 1:
		b.Group("g", model.AffinityHard)
	case 2:
		b.Group("g", model.AffinitySoft).MaxPerHost(2)
	}
	if rng.IntN(5) == 0 {
		b.Reserve(rng.IntN(1000), 1)
	}
	return b.Req()
}

// bruteForce returns the hosts that pass every filter, checked one by one.
func bruteForce(t *testing.T, s *Scheduler, snap *Snapshot, r Request) map[string]bool {
	c := &Cycle{}
	c.reset(snap)
	if err := c.compile(r); err != nil {
		t.Fatal(err)
	}
	ok := map[string]bool{}
	for h := range snap.Len() {
		pass := true
		for _, f := range s.filters {
			if f.Filter(c, h).Code != Success {
				pass = false
				break
			}
		}
		if pass {
			ok[snap.HostName(h)] = true
		}
	}
	return ok
}

// TestPropertyAgainstBruteForce: on random clusters, a placed VM lands on
// a host that passes every filter (required labels never violated), and a
// VM said not to fit really fits nowhere; the explanation accounts for
// every host. Placements are assumed as they go, exercising the index.
func TestPropertyAgainstBruteForce(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		hosts, allocs := randomCluster(rng, 40+rng.IntN(200))
		snap := newSnap(t, hosts, allocs...)
		pol := model.DefaultPolicy()
		if seed%2 == 1 {
			pol.Strategy = "spread"
		}
		s, err := New(pol, WithSampling(1+rng.IntN(8), 5+rng.IntN(50)))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 300 {
			r := randomVM(rng, i)
			r.Exhaustive = i%7 == 0
			ok := bruteForce(t, s, snap, r)
			d := s.Place(snap, r)
			if d.Err != nil {
				t.Fatalf("seed %d vm %d: %v", seed, i, d.Err)
			}
			rejected := 0
			for _, f := range d.Explanation.Filters {
				rejected += f.Rejected
			}
			switch {
			case d.Placed() && !ok[d.Host]:
				t.Fatalf("seed %d vm %d: placed on %s which fails a filter", seed, i, d.Host)
			case !d.Placed() && len(ok) > 0:
				t.Fatalf("seed %d vm %d: does not fit, but %d hosts do: %s", seed, i, len(ok), d.Explanation.Summary)
			case !d.Placed() && rejected != snap.Len():
				t.Fatalf("seed %d vm %d: %d of %d hosts accounted: %+v", seed, i, rejected, snap.Len(), d.Explanation.Filters)
			case d.Placed() && rejected >= snap.Len():
				t.Fatalf("seed %d vm %d: rejected %d of %d yet placed", seed, i, rejected, snap.Len())
			case r.Exhaustive && d.Placed() && rejected+len(ok) != snap.Len():
				t.Fatalf("seed %d vm %d: exhaustive: %d rejected + %d feasible != %d", seed, i, rejected, len(ok), snap.Len())
			}
			if d.Placed() {
				h := snap.HostIndex(d.Host)
				for k, v := range r.Spec.Placement.RequiredLabels {
					if snap.labels[h][k] != v {
						t.Fatalf("seed %d vm %d: required %s=%s, host %s has %q", seed, i, k, v, d.Host, snap.labels[h][k])
					}
				}
				if err := snap.Assume(d); err != nil {
					t.Fatal(err)
				}
			}
		}
		checkInvariants(t, snap)
	}
}

// checkInvariants: nothing past capacity × ratio (beyond what the random
// starting allocations already held), reservations within physical
// capacity, isolation domains unmixed, index in step with the hosts.
func checkInvariants(t *testing.T, snap *Snapshot) {
	t.Helper()
	for h := range snap.hosts {
		r := &snap.hosts[h]
		if r.memRes > r.memPhys || r.cpuRes > r.cpuPhys {
			t.Errorf("%s: reservations %d/%d over physical %d/%d", snap.names[h], r.cpuRes, r.memRes, r.cpuPhys, r.memPhys)
		}
		if r.domVMs > 0 && (r.dom == mixedDomain) {
			t.Errorf("%s: mixed isolation domains", snap.names[h])
		}
		if r.dom >= 0 && r.domVMs != r.vms && snap.domNames[r.dom] == "pci" && r.vms > 1 {
			// The random start may put one domain VM on a host ("x/1"); placement must never add a stranger.
			if r.vms-r.domVMs > 1 || r.domVMs > 1 {
				t.Errorf("%s: domain VMs %d of %d", snap.names[h], r.domVMs, r.vms)
			}
		}
		inIndex := snap.index.bucketOf[h] >= 0
		if inIndex != snap.schedulable.has(int32(h)) {
			t.Errorf("%s: indexed %v, schedulable %v", snap.names[h], inIndex, !inIndex)
		}
		if inIndex && int(snap.index.bucketOf[h]) != snap.index.bucketFor(r.indexKey()) {
			t.Errorf("%s: in bucket %d, key %d", snap.names[h], snap.index.bucketOf[h], r.indexKey())
		}
	}
}

func TestReservationsNeverOvercommitted(t *testing.T) {
	pol := model.DefaultPolicy()
	pol.Ratios.Memory = 3
	var hosts []model.Host
	for i := range 10 {
		hosts = append(hosts, MakeHost().Name(fmt.Sprintf("h%d", i)).CPUs(8).Memory(32).Obj())
	}
	snap, err := NewSnapshot(pol, hosts, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := New(pol)
	var reqs []Request
	for i := range 400 {
		reqs = append(reqs, MakeVM(fmt.Sprintf("p/%d", i)).CPUs(2).Memory(4).Reserve(1500, 3).Req())
	}
	placed := 0
	for _, d := range s.PlaceBatch(snap, reqs) {
		if d.Placed() {
			placed++
		}
	}
	for h := range snap.hosts {
		r := &snap.hosts[h]
		if r.memRes > r.memPhys || r.cpuRes > r.cpuPhys || r.memUsed > r.memLimit || r.cpuUsed > r.cpuLimit {
			t.Errorf("%s overcommitted: %+v", snap.names[h], *r)
		}
	}
	// 32GiB physical / 3GiB reserved = 10 per host; 8 CPUs / 1.5 = 5 per host: CPU binds.
	if placed != 50 {
		t.Errorf("placed %d, want 50 (5 per host by CPU reservation)", placed)
	}
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 7)) }

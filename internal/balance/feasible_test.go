package balance

import (
	"math/rand/v2"
	"testing"
)

// rules is a Feasibility that forbids some (VM, host) pairs and counts
// the holds a plan leaves.
type rules struct {
	forbid map[[2]int]bool
	home   []int
	held   map[[2]int]int
	asked  int
}

func (r *rules) Feasible(v, h int) bool {
	r.asked++
	return h == r.home[v] || !r.forbid[[2]int{v, h}]
}

func (r *rules) Hold(v, h int) {
	if h != r.home[v] {
		r.held[[2]int{v, h}]++
	}
}

func (r *rules) Release(v, h int) {
	if h != r.home[v] {
		r.held[[2]int{v, h}]--
	}
}

// ruleSnap is a busy random cluster: 12 hosts, 48 VMs with histories,
// some hosts overloaded, some nearly idle.
func ruleSnap() *Snapshot {
	rng := rand.New(rand.NewPCG(11, 11))
	var hosts []hostSpec
	for i := range 12 {
		h := []hostSpec{g4, g5}[i%2]
		hosts = append(hosts, withUtil(h, []float64{0.95, 0.05, 0.4, 0.6}[i%4]))
	}
	var vms []vmSpec
	for v := range 48 {
		host := v % 12
		u := hosts[host].util * (0.6 + 0.8*rng.Float64())
		hist := make([]float64, 12)
		for i := range hist {
			hist[i] = min(u*(0.8+0.4*rng.Float64()), 1)
		}
		vms = append(vms, vmSpec{host, 1000, 512, u * 1000, hist})
	}
	return snap(hosts, vms)
}

// TestPlannersKeepTheFeasibilityRules: every planner asks the rules before
// it moves a VM, never plans a forbidden move, and leaves exactly its
// planned moves held.
func TestPlannersKeepTheFeasibilityRules(t *testing.T) {
	forbid := map[[2]int]bool{}
	for v := range 48 {
		for _, h := range []int{(v*7 + 1) % 12, (v*5 + 3) % 12, 1, 5} {
			if h != v%12 {
				forbid[[2]int{v, h}] = true
			}
		}
	}
	broken := 0
	for _, name := range []string{"vpool", "drs", "thr-mmt-0.8", "lr-mmt-1.2", "mad-mc-2.5", "iqr-rs-1.5"} {
		t.Run(name, func(t *testing.T) {
			p, err := NewPlanner(name, 3)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range p.Plan(ruleSnap()).Moves {
				if forbid[[2]int{m.VM, m.To}] {
					broken++ // without the rules: the test below bites
				}
			}
			s := ruleSnap()
			r := &rules{forbid: forbid, held: map[[2]int]int{}}
			for _, vm := range s.VMs {
				r.home = append(r.home, vm.Host)
			}
			s.Feasible = r
			plan := p.Plan(s)
			if r.asked == 0 {
				t.Fatal("the planner never asked the rules")
			}
			planned := map[[2]int]bool{}
			for _, m := range plan.Moves {
				planned[[2]int{m.VM, m.To}] = true
				if forbid[[2]int{m.VM, m.To}] {
					t.Errorf("forbidden move %+v", m)
				}
				if r.held[[2]int{m.VM, m.To}] != 1 {
					t.Errorf("move %+v held %d times, want once", m, r.held[[2]int{m.VM, m.To}])
				}
			}
			for k, n := range r.held {
				if n != 0 && !planned[k] {
					t.Errorf("VM %d holds host %d %d times without a planned move", k[0], k[1], n)
				}
			}
			t.Logf("%d moves, %d questions", len(plan.Moves), r.asked)
		})
	}
	if broken == 0 {
		t.Error("no planner would have broken the rules on this cluster: the test proves nothing")
	}
}

// TestInitialPlacementKeepsTheRules: initial placement asks the rules too
// and holds what it places.
func TestInitialPlacementKeepsTheRules(t *testing.T) {
	s := snap([]hostSpec{g5, g5, g5}, []vmSpec{{-1, 1000, 512, 1000, nil}, {-1, 1000, 512, 1000, nil}})
	r := &rules{forbid: map[[2]int]bool{{0, 0}: true, {1, 0}: true, {1, 1}: true}, home: []int{-1, -1}, held: map[[2]int]int{}}
	s.Feasible = r
	for name, got := range map[string][]int{
		"vpool": NewVPool(DefaultVPoolConfig()).PlaceInitial(s),
		"pabfd": InitialPlacement(s, Threshold{Limit: 0.8}, false),
	} {
		if got[0] == 0 || got[1] != 2 {
			t.Errorf("%s placed %v against the rules", name, got)
		}
	}
}

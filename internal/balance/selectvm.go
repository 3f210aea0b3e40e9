package balance

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Selector picks the next VM to take off an overloaded host.
type Selector interface {
	Name() string
	// pick returns a VM on host hi, or -1 when none can move.
	pick(st *state, hi int) int
}

// MinMigrationTime (MMT) picks the VM with the least memory: the fastest
// to migrate. Ties go to the VM that arrived first.
type MinMigrationTime struct{}

// Name implements Selector.
func (MinMigrationTime) Name() string { return "mmt" }

func (MinMigrationTime) pick(st *state, hi int) int {
	best, bestMem := -1, math.MaxFloat64
	for _, v := range st.h[hi].vms {
		vm := &st.s.VMs[v]
		if vm.Migrating {
			continue
		}
		if vm.MemMB < bestMem {
			best, bestMem = v, vm.MemMB
		}
	}
	return best
}

// MaxCorrelation (MC) picks the VM whose utilisation history is best
// explained by the other VMs' (highest R²): moving it removes the most
// correlated load. It falls back to MMT when the histories are too short.
type MaxCorrelation struct{}

// Name implements Selector.
func (MaxCorrelation) Name() string { return "mc" }

func (MaxCorrelation) pick(st *state, hi int) int {
	var vms []int
	m := math.MaxInt
	for _, v := range st.h[hi].vms {
		vm := &st.s.VMs[v]
		if vm.Migrating {
			continue
		}
		vms = append(vms, v)
		m = min(m, len(vm.History))
	}
	n := len(vms)
	if n == 0 {
		return -1
	}
	if n < 2 || m <= n {
		return MinMigrationTime{}.pick(st, hi)
	}
	best, bestR := 0, math.SmallestNonzeroFloat64
	for i := range vms {
		x := make([][]float64, 0, n-1)
		for j, v := range vms {
			if j != i {
				x = append(x, st.s.VMs[v].History[:m])
			}
		}
		r, ok := rSquared(x, st.s.VMs[vms[i]].History[:m])
		if !ok {
			return MinMigrationTime{}.pick(st, hi)
		}
		if r > bestR {
			best, bestR = i, r
		}
	}
	return vms[best]
}

// RandomSelection picks a movable VM uniformly at random from a seeded
// generator, so runs are reproducible.
type RandomSelection struct{ rng *rand.Rand }

// NewRandomSelection returns a RandomSelection seeded with seed.
func NewRandomSelection(seed uint64) *RandomSelection {
	return &RandomSelection{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Name implements Selector.
func (*RandomSelection) Name() string { return "rs" }

func (r *RandomSelection) pick(st *state, hi int) int {
	var vms []int
	for _, v := range st.h[hi].vms {
		if !st.s.VMs[v].Migrating {
			vms = append(vms, v)
		}
	}
	if len(vms) == 0 {
		return -1
	}
	return vms[r.rng.IntN(len(vms))]
}

// NewSelector builds a selector by literature name (mmt, mc, rs, mu).
func NewSelector(name string, seed uint64) (Selector, error) {
	switch name {
	case "mmt":
		return MinMigrationTime{}, nil
	case "mc":
		return MaxCorrelation{}, nil
	case "rs", "random":
		return NewRandomSelection(seed), nil
	}
	return nil, fmt.Errorf("%w: vm selection %q", ErrUnknownPolicy, name)
}

package scale

import (
	"context"
	"testing"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// checkPlacedOnce reads the store behind the servers (the surviving
// members, or the external one) and checks that
// every acknowledged VM is placed, that each host's allocation holds
// exactly the VMs that name it (so no VM is held twice) with their demand
// summed, and that no host holds more than capacity × ratio.
func (st *stack) checkPlacedOnce(tb testing.TB, acked map[string]bool) {
	tb.Helper()
	ctx := context.Background()
	es, err := st.connectStore(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer es.Close()
	repo := state.New(es, nil)
	vms, _, err := repo.ListVMs(ctx, "")
	if err != nil {
		tb.Fatal(err)
	}
	allocs, _, err := repo.ListAllocations(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	hosts, _, err := repo.ListHosts(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	pol, _, err := repo.GetPolicy(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	want := map[string]*model.Allocation{}
	placed := map[string]bool{}
	for _, vm := range vms {
		if vm.Status.Host == "" {
			continue
		}
		placed[vm.Key()] = true
		a := want[vm.Status.Host]
		if a == nil {
			a = &model.Allocation{VMs: map[string]bool{}}
			want[vm.Status.Host] = a
		}
		state.AllocAdd(a, vm)
	}
	for k := range acked {
		if !placed[k] {
			tb.Errorf("acknowledged VM %s is not placed", k)
		}
	}
	holder := map[string]string{}
	for name, a := range allocs {
		w := want[name]
		if w == nil {
			w = &model.Allocation{}
		}
		if a.Used != w.Used || len(a.VMs) != len(w.VMs) {
			tb.Errorf("host %s: allocation holds %d VMs using %+v, its VMs are %d using %+v", name, len(a.VMs), a.Used, len(w.VMs), w.Used)
		}
		for k := range a.VMs {
			if other, dup := holder[k]; dup {
				tb.Errorf("VM %s is held by %s and %s", k, other, name)
			}
			holder[k] = name
			if !w.VMs[k] {
				tb.Errorf("host %s holds VM %s, which is not on it", name, k)
			}
		}
	}
	for _, h := range hosts {
		limit := model.Resources{CPUs: int(float64(h.Capacity.CPUs) * ratio(pol.Ratios.CPU, 4)),
			Memory: model.Bytes(float64(h.Capacity.Memory) * ratio(pol.Ratios.Memory, 1))}
		if a := allocs[h.Name]; a != nil && (a.Used.CPUs > limit.CPUs || a.Used.Memory > limit.Memory) {
			tb.Errorf("host %s over capacity: %+v of %+v", h.Name, a.Used, limit)
		}
	}
	tb.Logf("checked %d VMs (%d acknowledged) on %d hosts: each placed once, none over capacity", len(vms), len(acked), len(allocs))
}

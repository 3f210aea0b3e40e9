package controller

import (
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// TestCacheIndexesFollowVMs: the sets the passes read instead of walking
// every VM (pending, deleting, running per host) hold exactly what a
// walk of every cached VM finds, through puts that move VMs between
// hosts and phases, deletions, local writes and re-lists.
func TestCacheIndexesFollowVMs(t *testing.T) {
	c := newCache(slog.New(slog.DiscardHandler))
	rng := rand.New(rand.NewPCG(1, 14))
	hosts := []string{"", "h1", "h2", "h3"}
	phases := []model.Phase{model.PhasePending, model.PhaseCreating, model.PhaseRunning, model.PhaseStopped}
	rev := int64(0)
	mk := func() *model.VM {
		vm := &model.VM{Meta: model.Meta{Project: "p", Name: "v" + string(rune('a'+rng.IntN(12)))}}
		vm.CreatedAt = time.Unix(int64(rng.IntN(5)), 0)
		vm.Status.Host, vm.Status.Phase = hosts[rng.IntN(len(hosts))], phases[rng.IntN(len(phases))]
		if rng.IntN(6) == 0 {
			d := time.Unix(9, 0)
			vm.DeletedAt = &d
		}
		return vm
	}
	kv := func(vm *model.VM) store.KV {
		rev++
		b, _ := json.Marshal(vm)
		return store.KV{Key: store.VMKey(vm.Project, vm.Name), Value: b, ModRev: rev, CreateRev: 1}
	}
	for step := range 2000 {
		c.mu.Lock()
		switch op := rng.IntN(10); {
		case op < 6:
			k := kv(mk())
			c.applyVM(store.WatchEvent{Type: store.EventPut, KV: k, Rev: k.ModRev})
		case op < 8:
			rev++
			k := store.KV{Key: store.VMKey("p", "v"+string(rune('a'+rng.IntN(12)))), ModRev: rev}
			c.applyVM(store.WatchEvent{Type: store.EventDelete, KV: k, Rev: rev})
		case op < 9:
			c.mu.Unlock()
			vm := mk()
			rev++
			c.putVM(vm, rev)
			c.mu.Lock()
		default:
			var kvs []store.KV
			for range rng.IntN(6) {
				kvs = append(kvs, kv(mk()))
			}
			c.sources()[0].reset(kvs)
		}
		c.mu.Unlock()

		wantRunning := map[string][]*model.VM{}
		for _, vm := range c.vmList(func(vm *model.VM) bool { return vm.Status.Host != "" && vm.Status.Phase == model.PhaseRunning }) {
			wantRunning[vm.Status.Host] = append(wantRunning[vm.Status.Host], vm)
		}
		gotRunning := c.runningByHost()
		if len(gotRunning) != len(wantRunning) {
			t.Fatalf("step %d: running on %d hosts, a walk finds %d", step, len(gotRunning), len(wantRunning))
		}
		for h, want := range wantRunning {
			if !slices.Equal(gotRunning[h], want) {
				t.Fatalf("step %d: running on %s: %v, a walk finds %v", step, h, keys(gotRunning[h]), keys(want))
			}
		}
		if got, want := c.deletingList(), c.vmList(func(vm *model.VM) bool { return vm.DeletedAt != nil }); !slices.Equal(got, want) {
			t.Fatalf("step %d: deleting %v, a walk finds %v", step, keys(got), keys(want))
		}
		if got, want := c.pendingList(), c.vmList(needsPlacement); !slices.Equal(got, want) {
			t.Fatalf("step %d: pending %v, a walk finds %v", step, keys(got), keys(want))
		}
	}
}

func keys(vms []*model.VM) []string {
	out := make([]string, len(vms))
	for i, vm := range vms {
		out[i] = vm.Key()
	}
	return out
}

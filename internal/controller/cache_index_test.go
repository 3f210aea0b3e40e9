package controller

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// TestCacheIndexesFollowVMs: the sets the passes read instead of walking
// every VM (pending, deleting, running per host with their keys, placed
// VMs by host) hold exactly what a walk of every cached VM finds,
// through puts that move VMs between hosts and phases, deletions, local
// writes and re-lists.
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
		wantByHost := map[string][]*model.VM{}
		for _, vm := range c.vmList(func(vm *model.VM) bool { return vm.Status.Host != "" }) {
			wantByHost[vm.Status.Host] = append(wantByHost[vm.Status.Host], vm)
		}
		gotByHost := c.vmsByHost()
		if len(gotByHost) != len(wantByHost) {
			t.Fatalf("step %d: VMs on %d hosts, a sorted walk finds %d", step, len(gotByHost), len(wantByHost))
		}
		for h, want := range wantByHost {
			if !slices.Equal(gotByHost[h], want) {
				t.Fatalf("step %d: on %s: %v, a sorted walk finds %v", step, h, keys(gotByHost[h]), keys(want))
			}
		}
		for h, rvs := range c.runningKeyed() {
			for _, rv := range rvs {
				if rv.key != rv.vm.Key() {
					t.Fatalf("step %d: on %s a running VM keyed %q is %q", step, h, rv.key, rv.vm.Key())
				}
			}
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

// TestKeyLessIsKeyOrder: keyLess orders VMs as their keys do, also where
// one's project is a prefix of the other's.
func TestKeyLessIsKeyOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 14))
	word := func() string {
		const alphabet = "ab-/.0"
		b := make([]byte, rng.IntN(4))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 20000 {
		a := &model.VM{Meta: model.Meta{Project: word(), Name: word()}}
		b := &model.VM{Meta: model.Meta{Project: word(), Name: word()}}
		if got, want := keyLess(a, b), a.Key() < b.Key(); got != want {
			t.Fatalf("keyLess(%q, %q) = %v, want %v", a.Key(), b.Key(), got, want)
		}
	}
}

// TestHostViewFollowsHosts: the host view, whose sorted order is kept
// between calls, shows every put, delete and re-list.
func TestHostViewFollowsHosts(t *testing.T) {
	c := newCache(slog.New(slog.DiscardHandler))
	rev := int64(0)
	put := func(name string, cpus int) {
		rev++
		b, _ := json.Marshal(model.Host{Meta: model.Meta{Name: name}, Capacity: model.Resources{CPUs: cpus}})
		c.mu.Lock()
		c.applyHost(store.WatchEvent{Type: store.EventPut, KV: store.KV{Key: store.HostKey(name), Value: b, ModRev: rev}, Rev: rev})
		c.mu.Unlock()
	}
	del := func(name string) {
		rev++
		c.mu.Lock()
		c.applyHost(store.WatchEvent{Type: store.EventDelete, KV: store.KV{Key: store.HostKey(name), ModRev: rev}, Rev: rev})
		c.mu.Unlock()
	}
	view := func() string {
		hosts, _ := c.hostView()
		out := ""
		for _, h := range hosts {
			out += fmt.Sprintf("%s:%d ", h.Name, h.Capacity.CPUs)
		}
		return out
	}
	steps := []struct {
		do   func()
		want string
	}{
		{func() { put("h2", 2); put("h1", 1) }, "h1:1 h2:2 "},
		{func() { put("h0", 0) }, "h0:0 h1:1 h2:2 "},
		{func() { put("h1", 8) }, "h0:0 h1:8 h2:2 "},
		{func() { del("h0") }, "h1:8 h2:2 "},
		{func() { c.putHost(&model.Host{Meta: model.Meta{Name: "h3", Revision: rev + 1}}) }, "h1:8 h2:2 h3:0 "},
		{func() { c.mu.Lock(); c.sources()[1].reset(nil); c.mu.Unlock() }, ""},
	}
	for i, st := range steps {
		st.do()
		if got := view(); got != st.want {
			t.Fatalf("step %d: %q, want %q", i, got, st.want)
		}
	}
}

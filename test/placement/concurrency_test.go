package placement

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
	"github.com/vpool/vpool/internal/store/etcdstore/etcdtest"
)

// TestRacingSchedulersNeverOvercommit runs four scheduling controllers at
// once, without leader election, against one real etcd member: two in
// separate OS processes and two in goroutines of this one, each with its
// own cache. Hosts and pending VMs (more than fit, some in all-or-nothing
// groups) are seeded through internal/state while they run. When every VM
// is placed or pending with an explanation, every host is checked: its
// stored allocation is exactly the sum of the VMs on it and within
// capacity × ratio, reservations within physical capacity, groups whole.
func TestRacingSchedulersNeverOvercommit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd member and two scheduler processes")
	}
	ctx := context.Background()
	endpoints := etcdtest.StartCluster(t, 1)
	st, err := etcdstore.Connect(ctx, endpoints, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	repo := state.New(st, time.Now)
	pol := model.Policy{Ratios: model.Ratios{CPU: 2, Memory: 1.5, Disk: 1}, Strategy: "binpack"}
	if _, err := repo.PutPolicy(ctx, pol); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.CreateProject(ctx, &model.Project{Meta: model.Meta{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	const hosts = 40
	seedHosts(t, repo, hosts, func(i int, h *model.Host) {
		h.Capacity = model.Resources{CPUs: 8 + 8*(i%2), Memory: model.Bytes(16+16*(i%3%2)) * model.GiB, Disk: model.TiB}
		if i%5 == 0 {
			h.Ratios.CPU = 3 // a per-host override
		}
	})

	children := []*childScheduler{startScheduler(t, endpoints, "proc-a"), startScheduler(t, endpoints, "proc-b")}
	var inproc, lost atomic.Int64
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 2 {
		log := slog.New(&countPlaced{n: &inproc, lost: &lost})
		m := controller.New(schedulerConfig(st, fmt.Sprintf("goroutine-%d", i), log))
		wg.Go(func() {
			if err := m.Run(runCtx); err != nil {
				t.Errorf("in-process scheduler: %v", err)
			}
		})
	}

	// Arriving while they run: a 30-member anti-affinity group (fits on
	// 40 hosts), one of 41 (cannot: stays pending whole), affinity
	// triples, and 600 single VMs, some with reservations — more than fits.
	gangs := map[string]string{} // group → affinity kind
	createGang(t, repo, "anti30", 30, model.AntiAffinityHard, 1, model.GiB)
	gangs["anti30"] = model.AntiAffinityHard
	createGang(t, repo, "anti41", hosts+1, model.AntiAffinityHard, 1, model.GiB)
	gangs["anti41"] = model.AntiAffinityHard
	for g := range 5 {
		name := fmt.Sprintf("aff%d", g)
		createGang(t, repo, name, 3, model.AffinityHard, 2, 2*model.GiB)
		gangs[name] = model.AffinityHard
	}
	for b := range 12 {
		batch := make([]*model.VM, 50)
		for j := range batch {
			i := b*50 + j
			spec := model.VMSpec{VCPUs: 1 + i%4, Memory: model.Bytes(1+i%8) * model.GiB, Power: model.PowerRunning,
				Disks: []model.Disk{{Name: "root", Size: 10 * model.GiB}}}
			if i%7 == 0 {
				spec.Controls = model.Controls{CPUReservation: 500 * spec.VCPUs, MemoryReservation: spec.Memory}
			}
			batch[j] = &model.VM{Meta: model.Meta{Name: fmt.Sprintf("vm-%03d", i)}, Spec: spec}
		}
		if _, err := repo.CreateVMs(ctx, "p", batch); err != nil {
			t.Fatal(err)
		}
	}

	waitDecided(t, repo)
	cancel()
	wg.Wait()
	for _, c := range children {
		c.stop()
	}

	vms, _, err := repo.ListVMs(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	placed := checkHosts(t, repo, vms)
	checkGangs(t, vms, gangs)
	checkPendingFitNowhere(t, repo, vms)
	byChild := []int{children[0].placed(), children[1].placed()}
	lostChild := []int{children[0].lost(), children[1].lost()}
	t.Logf("%d of %d VMs placed: %v by the two processes, %d by the two goroutines; compare-and-swaps lost: %v by the processes, %d by the goroutines",
		placed, len(vms), byChild, inproc.Load(), lostChild, lost.Load())
	if int64(lostChild[0]+lostChild[1])+lost.Load() == 0 {
		t.Errorf("no scheduler ever lost a compare-and-swap: they did not race")
	}
	if placed == 0 || placed == len(vms) {
		t.Errorf("%d of %d VMs placed: the workload must overfill the hosts", placed, len(vms))
	}
	if int64(byChild[0]+byChild[1])+inproc.Load() != int64(placed) {
		t.Errorf("placements logged %d + %d + %d, placed VMs %d: a placement was committed twice", byChild[0], byChild[1], inproc.Load(), placed)
	}
	events, _, err := repo.ListEvents(ctx, 0, "p")
	if err != nil {
		t.Fatal(err)
	}
	creating := 0
	for _, ev := range events {
		if ev.Kind == state.EventVMPhase && ev.To == string(model.PhaseCreating) {
			creating++
		}
	}
	if creating != placed {
		t.Errorf("%d pending → creating events for %d placed VMs", creating, placed)
	}
}

// countPlaced is a slog.Handler that counts placements and lost
// compare-and-swaps.
type countPlaced struct{ n, lost *atomic.Int64 }

func (h *countPlaced) Enabled(context.Context, slog.Level) bool { return true }
func (h *countPlaced) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, "placement lost its compare-and-swap") {
		h.lost.Add(1)
	}
	if r.Message == "placed VM" {
		h.n.Add(1)
	}
	return nil
}
func (h *countPlaced) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countPlaced) WithGroup(string) slog.Handler      { return h }

// seedHosts registers n ready hosts h00.. directly in the store.
func seedHosts(t testing.TB, repo *state.Repo, n int, edit func(i int, h *model.Host)) {
	t.Helper()
	for i := range n {
		_, err := repo.UpsertHost(context.Background(), fmt.Sprintf("h%03d", i), func(h *model.Host, _ bool) error {
			h.State, h.Driver, h.LastSeen = model.HostReady, "sim", time.Now()
			h.Capacity = model.Resources{CPUs: 16, Memory: 64 * model.GiB, Disk: model.TiB}
			if edit != nil {
				edit(i, h)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// createGang creates NAME-1..NAME-n in one batch, all in group NAME.
func createGang(t testing.TB, repo *state.Repo, name string, n int, kind string, vcpus int, mem model.Bytes) {
	t.Helper()
	vms := make([]*model.VM, n)
	for i := range vms {
		vms[i] = &model.VM{Meta: model.Meta{Name: fmt.Sprintf("%s-%d", name, i+1)}, Spec: model.VMSpec{
			VCPUs: vcpus, Memory: mem, Power: model.PowerRunning,
			Placement: model.Placement{AffinityGroup: name, Affinity: kind}}}
	}
	if _, err := repo.CreateVMs(context.Background(), "p", vms); err != nil {
		t.Fatal(err)
	}
}

// decided reports whether vm is placed, or pending with the explanation
// of a decision that found no host.
func decided(vm *model.VM) bool {
	st := &vm.Status
	return st.Host != "" || (st.Phase == model.PhasePending && st.Explanation != nil && st.Explanation.Chosen == "")
}

// waitDecided polls until every VM is decided. Capacity only shrinks
// while the test runs, so a VM found to fit nowhere stays so: the state
// is final. The deadline only guards against hangs.
func waitDecided(t testing.TB, repo *state.Repo) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		vms, _, err := repo.ListVMs(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		left := 0
		for _, vm := range vms {
			if !decided(vm) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d VMs still undecided", left, len(vms))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkHosts checks every host against the VMs placed on it and returns
// how many VMs are placed: the stored allocation holds exactly those VMs,
// its Used is the sum of their demands and within capacity × ratio, its
// reservations the sum of theirs and within physical capacity.
func checkHosts(t testing.TB, repo *state.Repo, vms []*model.VM) int {
	t.Helper()
	ctx := context.Background()
	hosts, _, err := repo.ListHosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	allocs, _, err := repo.ListAllocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pol, _, err := repo.GetPolicy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type sum struct {
		used   model.Resources
		resCPU int
		resMem model.Bytes
		vms    map[string]bool
	}
	sums := map[string]*sum{}
	placed := 0
	for _, vm := range vms {
		h := vm.Status.Host
		if h == "" {
			continue
		}
		placed++
		s := sums[h]
		if s == nil {
			s = &sum{vms: map[string]bool{}}
			sums[h] = s
		}
		s.used = s.used.Add(vm.Spec.Demand())
		s.resCPU += vm.Spec.Controls.CPUReservation
		s.resMem += vm.Spec.Controls.MemoryReservation
		s.vms[vm.Key()] = true
	}
	for _, h := range hosts {
		a := model.Allocation{}
		if allocs[h.Name] != nil {
			a = *allocs[h.Name]
		}
		s := sums[h.Name]
		if s == nil {
			s = &sum{vms: map[string]bool{}}
		}
		if a.Used != s.used || a.ReservedCPUMilli != s.resCPU || a.Reserved.Memory != s.resMem {
			t.Errorf("host %s: allocation used %+v reserved %d mCPU %s, VMs on it sum to %+v reserved %d mCPU %s",
				h.Name, a.Used, a.ReservedCPUMilli, a.Reserved.Memory, s.used, s.resCPU, s.resMem)
		}
		for k := range s.vms {
			if !a.VMs[k] {
				t.Errorf("host %s: VM %s on it is missing from its allocation", h.Name, k)
			}
		}
		for k, in := range a.VMs {
			if in && !s.vms[k] {
				t.Errorf("host %s: allocation counts VM %s that is not on it", h.Name, k)
			}
		}
		lim := controller.Limit(h, pol)
		if s.used.CPUs > lim.CPUs || s.used.Memory > lim.Memory || s.used.Disk > lim.Disk {
			t.Errorf("host %s over capacity × ratio: %+v > %+v", h.Name, s.used, lim)
		}
		if s.resCPU > h.Capacity.CPUs*1000 || s.resMem > h.Capacity.Memory {
			t.Errorf("host %s reserves %d mCPU, %s past its physical %d CPUs, %s", h.Name, s.resCPU, s.resMem, h.Capacity.CPUs, h.Capacity.Memory)
		}
	}
	return placed
}

// checkGangs checks that every group is whole: all placed or none, anti-
// affinity members on distinct hosts, affinity members on one.
func checkGangs(t testing.TB, vms []*model.VM, gangs map[string]string) {
	t.Helper()
	for g, kind := range gangs {
		var hosts []string
		members := 0
		for _, vm := range vms {
			if vm.Spec.Placement.AffinityGroup != g {
				continue
			}
			members++
			if vm.Status.Host != "" {
				hosts = append(hosts, vm.Status.Host)
			}
		}
		distinct := map[string]bool{}
		for _, h := range hosts {
			distinct[h] = true
		}
		switch {
		case len(hosts) != 0 && len(hosts) != members:
			t.Errorf("group %s: %d of %d members placed: not all or nothing", g, len(hosts), members)
		case kind == model.AntiAffinityHard && len(distinct) != len(hosts):
			t.Errorf("group %s: anti-affine members share hosts %v", g, hosts)
		case kind == model.AffinityHard && len(distinct) > 1:
			t.Errorf("group %s: affine members on hosts %v", g, hosts)
		}
		t.Logf("group %s (%s): %d of %d placed", g, kind, len(hosts), members)
	}
}

// checkPendingFitNowhere checks that every pending VM outside a group
// fits on no host as the hosts are now.
func checkPendingFitNowhere(t testing.TB, repo *state.Repo, vms []*model.VM) {
	t.Helper()
	ctx := context.Background()
	hosts, _, _ := repo.ListHosts(ctx)
	allocs, _, _ := repo.ListAllocations(ctx)
	pol, _, _ := repo.GetPolicy(ctx)
	for _, vm := range vms {
		if vm.Status.Host != "" || vm.Spec.Placement.AffinityGroup != "" {
			continue
		}
		for _, h := range hosts {
			a := model.Allocation{}
			if allocs[h.Name] != nil {
				a = *allocs[h.Name]
			}
			if why := controller.Fits(h, a, pol, &vm.Spec); why == "" {
				t.Errorf("VM %s is pending (%s) but fits on %s", vm.Name, vm.Status.Explanation.Summary, h.Name)
				break
			}
		}
	}
}

var _ store.Store = (*etcdstore.Store)(nil)

package simulate

import (
	"context"
	"sort"
	"testing"

	"github.com/vpool/vpool/internal/balance"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/trace"
)

// The literature's data centre in the server's terms: one scheduler CPU
// is 20 MIPS (the common divisor of 1860×2, 2660×2, 2500, 2000, 1000 and
// 500), memory is the type's, storage holds 400 images of 2500 MiB, and
// the two VM types too big for a G4 core require the label only G5s carry.
func TestNewClusterDescribesTheLiteratureDataCentre(t *testing.T) {
	c := NewCluster(constTrace(2, 0.1, 0.1, 0.1, 0.1), 12)
	if c.MIPSPerCPU != 20 {
		t.Fatalf("MIPSPerCPU = %d, want 20", c.MIPSPerCPU)
	}
	if c.Policy.Strategy != model.DefaultPolicy().Strategy || c.Policy.Ratios != model.DefaultPolicy().Ratios {
		t.Errorf("policy %+v: want the server's default policy", c.Policy)
	}
	g4, g5 := CoreLabelPrefix+"2500", CoreLabelPrefix+"2000"
	for _, tc := range []struct {
		host   int
		name   string
		cpus   int
		labels map[string]string
	}{
		{0, "host-00", 186, map[string]string{}},
		{1, "host-01", 266, map[string]string{g4: "true", g5: "true"}},
		{11, "host-11", 266, map[string]string{g4: "true", g5: "true"}},
	} {
		h := c.Hosts[tc.host]
		if h.Name != tc.name || h.Capacity.CPUs != tc.cpus || h.Capacity.Memory != 4096*model.MiB ||
			h.Capacity.Disk != 400*2500*model.MiB || h.State != model.HostReady || !sameMap(h.Labels, tc.labels) {
			t.Errorf("host %d = %s %+v %v", tc.host, h.Name, h.Capacity, h.Labels)
		}
	}
	for i, want := range []struct {
		vcpus    int
		memMiB   model.Bytes
		required string
	}{{125, 870, g4}, {100, 1740, g5}, {50, 1740, ""}, {25, 613, ""}} {
		vm := c.VMs[i]
		req := ""
		for k := range vm.Spec.Placement.RequiredLabels {
			req = k
		}
		if vm.Key() != "sim/vm-"+string(rune('0'+i)) || vm.Spec.VCPUs != want.vcpus ||
			vm.Spec.Memory != want.memMiB*model.MiB || req != want.required || vm.Spec.DiskSize() != 2500*model.MiB {
			t.Errorf("vm %d = %s %+v", i, vm.Key(), vm.Spec)
		}
	}
	names := make([]string, len(c.Hosts))
	for i := range c.Hosts {
		names[i] = c.Hosts[i].Name
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("host names are not in index order: %v", names)
	}
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// rampTrace has n VMs whose utilisation ramps differently, so that the
// vpool policy migrates some of them; every tenth VM goes idle after six
// samples (the literature setup then drops it).
func rampTrace(n, samples int) *trace.Trace {
	tr := &trace.Trace{Interval: 300}
	for i := 0; i < n; i++ {
		cpu := make([]float64, samples)
		for j := range cpu {
			cpu[j] = 0.05 + 0.9*float64((i*7+j*(i%5+1))%20)/20
			if i%10 == 0 && j >= 6 {
				cpu[j] = 0
			}
		}
		tr.VMs = append(tr.VMs, trace.VM{Name: string(rune('a'+i%26)) + string(rune('a'+i/26)), CPU: cpu})
	}
	return tr
}

// After a replay under the vpool policy the server view holds every VM
// on the host the simulator has it on (and on its target while it
// copies), nowhere else, each VM's record names its host (none once
// dropped), and the scheduler's snapshot agrees with the allocation
// records.
func TestServerViewFollowsEveryMove(t *testing.T) {
	for _, setup := range []Setup{Literature, Realistic} {
		t.Run(string(setup), func(t *testing.T) {
			tr := rampTrace(60, 24)
			cfg := Config{Setup: setup, Policy: "vpool", Hosts: 40}
			e := newEngine(tr, cfg, balance.NewVPool(balance.DefaultVPoolConfig()))
			if err := e.place(); err != nil {
				t.Fatal(err)
			}
			if err := e.run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if e.migs == 0 {
				t.Fatal("no migration: the trace does not exercise the view")
			}
			want := make([]map[string]bool, len(e.hosts))
			for i := range want {
				want[i] = map[string]bool{}
			}
			// A VM counts on its host and, while it copies, on its target.
			for h := range e.hosts {
				for _, v := range e.hosts[h].vms {
					if e.vms[v].alive {
						want[h][e.view.c.VMs[v].Key()] = true
					}
				}
			}
			for v := range e.vms {
				want := ""
				if e.vms[v].alive {
					want = e.view.c.Hosts[e.vms[v].host].Name
				}
				if got := e.view.c.VMs[v].Status.Host; got != want {
					t.Fatalf("VM %d: its record names host %q, the simulator has it on %q", v, got, want)
				}
			}
			for h := range e.hosts {
				a := e.view.allocs[h]
				if len(a.VMs) != len(want[h]) {
					t.Fatalf("host %d: view holds %d VMs, simulator %d", h, len(a.VMs), len(want[h]))
				}
				for k := range want[h] {
					if !a.VMs[k] {
						t.Fatalf("host %d: view misses %s", h, k)
					}
				}
				cpu, mem, disk, n := e.view.snap.Used(h)
				if cpu != int64(a.Used.CPUs)*1000 || mem != int64(a.Used.Memory) || disk != int64(a.Used.Disk) || n != len(a.VMs) {
					t.Fatalf("host %d: snapshot %d/%d/%d/%d, allocation %+v", h, cpu, mem, disk, n, a.Used)
				}
			}
		})
	}
}

// The view's hook is the scheduler's check of one move on the
// allocations as they are now.
func TestServerViewHook(t *testing.T) {
	// VM 0 is a c1.medium (2500 MIPS, 870 MiB), VMs 1-4 m1.xlarge (2000
	// MIPS, 1740 MiB): two of those fill a G5's memory.
	tr := constTrace(2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)
	v, err := newServerView(NewCluster(tr, 6))
	if err != nil {
		t.Fatal(err)
	}
	v.arrive(2, -1, 3)
	v.arrive(3, -1, 3)
	hook := v.hook()
	for _, tc := range []struct {
		name   string
		vm, to int
		want   bool
	}{
		{"2500 MIPS on a G4 core", 0, 0, false},
		{"2500 MIPS on an empty G5", 0, 1, true},
		{"2000 MIPS on a G5 whose memory is taken", 1, 3, false},
		{"1000 MIPS on a G4", 4, 2, true},
		{"a VM stays on its host", 2, 3, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hook.Feasible(tc.vm, tc.to); got != tc.want {
				t.Errorf("Feasible(%d, %d) = %v (%s), want %v", tc.vm, tc.to, got, hook.Why(tc.vm, tc.to), tc.want)
			}
		})
	}
	v.drop(3, 3)
	if !v.hook().Feasible(1, 3) {
		t.Error("a VM left host 3, yet an m1.xlarge still does not fit there")
	}
	if v.c.VMs[2].Status.Host != v.c.Hosts[3].Name || v.c.VMs[3].Status.Host != "" {
		t.Errorf("VM records name %q and %q, want %q and none", v.c.VMs[2].Status.Host, v.c.VMs[3].Status.Host, v.c.Hosts[3].Name)
	}
}

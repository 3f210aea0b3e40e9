package controller

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

func checkHost(name string, mut ...func(*model.Host)) model.Host {
	h := model.Host{Meta: model.Meta{Name: name}, State: model.HostReady, Driver: "qemu", Accel: "kvm",
		CPUModel: "x86-64-v2", HypervisorVersion: "QEMU 7.2.0", MachineType: "pc-q35-7.2",
		Capacity: model.Resources{CPUs: 8, Memory: 16 * model.GiB, Disk: model.TiB}}
	for _, f := range mut {
		f(&h)
	}
	return h
}

func checkVM(mut ...func(*model.VM)) *model.VM {
	vm := &model.VM{Meta: model.Meta{Name: "web", Project: "p"},
		Spec:   model.VMSpec{VCPUs: 2, Memory: 2 * model.GiB, Power: model.PowerRunning, NICs: []model.NIC{{Network: "lan"}}},
		Status: model.VMStatus{Phase: model.PhaseRunning, Host: "src"}}
	for _, f := range mut {
		f(vm)
	}
	return vm
}

func TestCheckMigration(t *testing.T) {
	now := time.Unix(1000, 0)
	cases := []struct {
		name   string
		hosts  []model.Host
		vm     *model.VM
		to     string
		alive  map[string]bool
		want   string // target, or "" when refused
		mode   model.MigrationMode
		reason string
	}{
		{name: "to a named host", hosts: []model.Host{checkHost("src"), checkHost("dst")}, vm: checkVM(), to: "dst", want: "dst", mode: model.MigrationLive},
		{name: "scheduler picks, never the source", hosts: []model.Host{checkHost("dst"), checkHost("src")}, vm: checkVM(), want: "dst", mode: model.MigrationLive},
		{name: "stopped moves cold across drivers", hosts: []model.Host{checkHost("src"), checkHost("dst", func(h *model.Host) { h.Driver = "sim" })},
			vm: checkVM(func(v *model.VM) { v.Status.Phase, v.Spec.Power = model.PhaseStopped, model.PowerStopped }), to: "dst", want: "dst", mode: model.MigrationCold},
		{name: "no capacity", hosts: []model.Host{checkHost("src"), checkHost("dst", func(h *model.Host) { h.Capacity.Memory = model.GiB })},
			vm: checkVM(), to: "dst", reason: "insufficient memory"},
		{name: "required label", hosts: []model.Host{checkHost("src"), checkHost("dst")},
			vm: checkVM(func(v *model.VM) { v.Spec.Placement.RequiredLabels = map[string]string{"ssd": "true"} }), to: "dst", reason: "ssd=true"},
		{name: "pinned, no target named", hosts: []model.Host{checkHost("src"), checkHost("dst")},
			vm: checkVM(func(v *model.VM) { v.Spec.Placement.Host = "src" }), reason: "pinned to host src (spec.placement.host, set by vm create --host): " +
				"name its new host with 'vpool vm migrate web --to HOST', and the pin moves with it"},
		{name: "pinned, the operator names the target", hosts: []model.Host{checkHost("src"), checkHost("dst")},
			vm: checkVM(func(v *model.VM) { v.Spec.Placement.Host = "src" }), to: "dst", want: "dst", mode: model.MigrationLive},
		{name: "pinned, the named target must still fit", hosts: []model.Host{checkHost("src"), checkHost("dst", func(h *model.Host) { h.Capacity.Memory = model.GiB })},
			vm: checkVM(func(v *model.VM) { v.Spec.Placement.Host = "src" }), to: "dst", reason: "insufficient memory"},
		{name: "target in maintenance", hosts: []model.Host{checkHost("src"), checkHost("dst", func(h *model.Host) { h.State = model.HostMaintenance })},
			vm: checkVM(), to: "dst", reason: "not ready (maintenance)"},
		{name: "target without agent", hosts: []model.Host{checkHost("src"), checkHost("dst")}, alive: map[string]bool{"src": true},
			vm: checkVM(), to: "dst", reason: "no live agent"},
		{name: "network missing", hosts: []model.Host{checkHost("src"), checkHost("dst", func(h *model.Host) { h.Networks = []string{"dmz"} })},
			vm: checkVM(), to: "dst", reason: `dst does not fit: lacks host network lan`},
		{name: "vpool network: target serves none", hosts: []model.Host{checkHost("src"), checkHost("dst")},
			vm: checkVM(func(v *model.VM) { v.Spec.NICs[0].IP = "10.1.0.5" }), to: "dst", reason: `dst does not fit: serves no vpool networks`},
		{name: "vpool network: target on the overlay", hosts: []model.Host{checkHost("src"), checkHost("dst", func(h *model.Host) {
			h.Net, h.Networks = &model.HostNet{Overlay: "192.0.2.2"}, []string{"dmz"}
		})}, vm: checkVM(func(v *model.VM) { v.Spec.NICs[0].IP = "10.1.0.5" }), to: "dst", want: "dst", mode: model.MigrationLive},
		{name: "older hypervisor", hosts: []model.Host{checkHost("src"), checkHost("dst", func(h *model.Host) { h.HypervisorVersion = "QEMU 7.1.9" })},
			vm: checkVM(), to: "dst", reason: "older than QEMU 7.2.0"},
		{name: "newer hypervisor", hosts: []model.Host{checkHost("src"), checkHost("dst", func(h *model.Host) { h.HypervisorVersion = "QEMU 7.10" })},
			vm: checkVM(), to: "dst", want: "dst", mode: model.MigrationLive},
		{name: "machine types differ", hosts: []model.Host{checkHost("src"), checkHost("dst", func(h *model.Host) {
			h.HypervisorVersion, h.MachineType = "QEMU 10.0.2", "pc-q35-10.0"
		})}, vm: checkVM(), to: "dst", reason: "--machine (e.g. pc-q35-7.2)"},
		{name: "a newer QEMU running the same machine type", hosts: []model.Host{checkHost("src"), checkHost("dst", func(h *model.Host) {
			h.HypervisorVersion = "QEMU 10.0.2"
		})}, vm: checkVM(), to: "dst", want: "dst", mode: model.MigrationLive},
		{name: "CPU models differ", hosts: []model.Host{checkHost("src"), checkHost("dst", func(h *model.Host) { h.CPUModel = "EPYC" })},
			vm: checkVM(), to: "dst", reason: "CPU models differ"},
		{name: "incompatible hosts are skipped when the scheduler picks", hosts: []model.Host{checkHost("src"),
			checkHost("a", func(h *model.Host) { h.Accel = "tcg" }), checkHost("b")}, vm: checkVM(), want: "b", mode: model.MigrationLive},
		{name: "already migrating", hosts: []model.Host{checkHost("src"), checkHost("dst")},
			vm: checkVM(func(v *model.VM) { v.Status.Migration = "m1" }), reason: "already has migration m1"},
		{name: "starting", hosts: []model.Host{checkHost("src"), checkHost("dst")},
			vm: checkVM(func(v *model.VM) { v.Status.Phase = model.PhaseStopped }), reason: "is starting"},
		{name: "creating", hosts: []model.Host{checkHost("src"), checkHost("dst")},
			vm: checkVM(func(v *model.VM) { v.Status.Phase = model.PhaseCreating }), reason: "only running, paused, stopped or failed"},
		{name: "to itself", hosts: []model.Host{checkHost("src"), checkHost("dst")}, vm: checkVM(), to: "src", reason: "already on src"},
		{name: "unknown target", hosts: []model.Host{checkHost("src")}, vm: checkVM(), to: "nope", reason: `host "nope" not found`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &Snapshot{Hosts: tc.hosts, Allocs: map[string]model.Allocation{}, Policy: model.DefaultPolicy(), Now: now}
			s.Allocs["src"] = allocAdd(model.Allocation{}, "src", tc.vm)
			p := NewSchedulerPlacer()
			p.Exhaustive = true
			c, err := CheckMigration(s, tc.alive, tc.vm, tc.to, p)
			if tc.want == "" {
				if !errors.Is(err, state.ErrRefused) || !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("got %+v, %v; want a refusal containing %q", c, err, tc.reason)
				}
				return
			}
			if err != nil || c.Target != tc.want || c.Mode != tc.mode {
				t.Fatalf("got %+v, %v; want %s (%s)", c, err, tc.want, tc.mode)
			}
		})
	}
}

func TestVersionLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"7.2", "7.10", true}, {"7.10", "7.2", false}, {"QEMU 7.2.0", "QEMU 7.2", false},
		{"QEMU 7.2", "QEMU 7.2.1", true}, {"sim-1", "sim-2", true}, {"8.0", "8.0", false},
	} {
		if got := versionLess(tc.a, tc.b); got != tc.want {
			t.Errorf("versionLess(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

// TestCheckMigrationAgreesWithTheGate: the pre-check refuses what the
// gate would refuse when the migration takes its hold — one member of a
// hard-affinity group leaving the others on a ready host — and allows
// the last member of a group to follow the others.
func TestCheckMigrationAgreesWithTheGate(t *testing.T) {
	member := func(name string) *model.VM {
		return checkVM(func(v *model.VM) {
			v.Name, v.Spec.Placement.AffinityGroup, v.Spec.Placement.Affinity = name, "g", model.AffinityHard
		})
	}
	a, b := member("a"), member("b")
	s := &Snapshot{Hosts: []model.Host{checkHost("src"), checkHost("dst")}, Allocs: map[string]model.Allocation{}, Policy: model.DefaultPolicy()}
	s.Allocs["src"] = allocAdd(allocAdd(model.Allocation{}, "src", a), "src", b)
	p := NewSchedulerPlacer()
	p.Exhaustive = true
	if c, err := CheckMigration(s, nil, a, "dst", p); !errors.Is(err, state.ErrRefused) || !strings.Contains(err.Error(), "affinity group") {
		t.Fatalf("one member away from the group: %+v, %v", c, err)
	}
	// b already left for dst: a may follow it.
	s.Allocs["src"] = allocAdd(model.Allocation{}, "src", a)
	s.Allocs["dst"] = allocAdd(model.Allocation{}, "dst", b)
	if c, err := CheckMigration(s, nil, a, "dst", p); err != nil || c.Target != "dst" {
		t.Fatalf("the last member following the group: %+v, %v", c, err)
	}
}

package scheduler

import (
	"testing"

	"github.com/vpool/vpool/internal/model"
)

type filterCase struct {
	name  string
	host  model.Host
	alloc *model.Allocation
	req   Request
	want  string // "" = fits, else the explanation text
}

func runFilterCases(t *testing.T, f Filter, cases []filterCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, why := filterOne(t, f, tc.host, tc.alloc, tc.req)
			if st.Code == Error {
				t.Fatalf("error: %v", st.Err)
			}
			if why != tc.want {
				t.Errorf("got %q, want %q", why, tc.want)
			}
		})
	}
}

func TestFit(t *testing.T) {
	h := MakeHost().Name("h").CPUs(16).Memory(64).Disk(1000)
	runFilterCases(t, Fit{}, []filterCase{
		{name: "empty host fits", host: h.Obj(), req: MakeVM("p/a").CPUs(4).Memory(8).Req()},
		{name: "memory exactly full fits", host: h.Obj(), alloc: ptr(MakeAlloc("h").Used(0, 56, 0).Obj()), req: MakeVM("p/a").Memory(8).Req()},
		{name: "memory short", host: h.Obj(), alloc: ptr(MakeAlloc("h").Used(0, 58, 0).Obj()), req: MakeVM("p/a").Memory(8).Req(),
			want: "insufficient memory (needs 8GiB, most free 6GiB)"},
		{name: "cpu overcommit 4.0 by default", host: h.Obj(), alloc: ptr(MakeAlloc("h").Used(60, 0, 0).Obj()), req: MakeVM("p/a").CPUs(4).Req()},
		{name: "cpu beyond 4.0", host: h.Obj(), alloc: ptr(MakeAlloc("h").Used(61, 0, 0).Obj()), req: MakeVM("p/a").CPUs(4).Req(),
			want: "insufficient CPU (needs 4 vCPUs, most free 3 vCPUs)"},
		{name: "host cpu ratio override 1.0", host: MakeHost().Name("h").CPUs(16).Ratios(1, 0, 0).Obj(), alloc: ptr(MakeAlloc("h").Used(14, 0, 0).Obj()),
			req: MakeVM("p/a").CPUs(4).Req(), want: "insufficient CPU (needs 4 vCPUs, most free 2 vCPUs)"},
		{name: "memory ratio 2.0 overcommits", host: MakeHost().Name("h").Memory(64).Ratios(0, 2, 0).Obj(), alloc: ptr(MakeAlloc("h").Used(0, 100, 0).Obj()),
			req: MakeVM("p/a").Memory(28).Req()},
		{name: "memory ratio clamped to 3.0", host: MakeHost().Name("h").Memory(64).Ratios(0, 5, 0).Obj(), alloc: ptr(MakeAlloc("h").Used(0, 190, 0).Obj()),
			req: MakeVM("p/a").Memory(4).Req(), want: "insufficient memory (needs 4GiB, most free 2GiB)"},
		{name: "disk short", host: h.Obj(), alloc: ptr(MakeAlloc("h").Used(0, 0, 990).Obj()), req: MakeVM("p/a").Disk(20, "", "").Req(),
			want: "insufficient disk (needs 20GiB, most free 10GiB)"},
		{name: "memory reservation covered physically", host: MakeHost().Name("h").Memory(64).Ratios(0, 3, 0).Obj(),
			alloc: ptr(MakeAlloc("h").Used(0, 100, 0).Reserved(0, 56).Obj()), req: MakeVM("p/a").Memory(8).Reserve(0, 8).Req()},
		{name: "memory reservation never overcommitted", host: MakeHost().Name("h").Memory(64).Ratios(0, 3, 0).Obj(),
			alloc: ptr(MakeAlloc("h").Used(0, 100, 0).Reserved(0, 60).Obj()), req: MakeVM("p/a").Memory(8).Reserve(0, 8).Req(),
			want: "memory reservation not covered by physical memory (needs 8GiB, most unreserved 4GiB)"},
		{name: "cpu reservation never overcommitted", host: h.Obj(),
			alloc: ptr(MakeAlloc("h").Used(20, 0, 0).Reserved(15500, 0).Obj()), req: MakeVM("p/a").CPUs(2).Reserve(1000, 0).Req(),
			want: "CPU reservation not covered by physical CPUs (needs 1 CPU, most unreserved 0.5 CPU)"},
	})
}

func TestHostState(t *testing.T) {
	req := MakeVM("p/a").Req()
	runFilterCases(t, HostState{}, []filterCase{
		{name: "ready", host: MakeHost().Obj(), req: req},
		{name: "maintenance", host: MakeHost().State(model.HostMaintenance).Obj(), req: req, want: "in maintenance"},
		{name: "standby", host: MakeHost().State(model.HostStandby).Obj(), req: req, want: "in standby (powered down)"},
		{name: "down", host: MakeHost().State(model.HostDown).Obj(), req: req, want: "down"},
		{name: "fenced", host: MakeHost().State(model.HostFenced).Obj(), req: req, want: "fenced"},
		{name: "cordoned", host: MakeHost().Cordon().Obj(), req: req, want: "cordoned"},
		{name: "unknown", host: MakeHost().State("weird").Obj(), req: req, want: "not ready (unknown state)"},
	})
}

func TestLabelsFilter(t *testing.T) {
	eu := MakeHost().Label("region", "eu").Label("disk", "ssd").Obj()
	runFilterCases(t, Labels{}, []filterCase{
		{name: "no requirement", host: MakeHost().Obj(), req: MakeVM("p/a").Req()},
		{name: "match", host: eu, req: MakeVM("p/a").Require("region", "eu").Req()},
		{name: "match all", host: eu, req: MakeVM("p/a").Require("region", "eu").Require("disk", "ssd").Req()},
		{name: "wrong value", host: eu, req: MakeVM("p/a").Require("region", "us").Req(), want: "missing required labels region=us"},
		{name: "one of two missing", host: eu, req: MakeVM("p/a").Require("region", "eu").Require("gpu", "a100").Req(),
			want: "missing required labels gpu=a100,region=eu"},
		{name: "preferred is not a filter", host: MakeHost().Obj(), req: MakeVM("p/a").Prefer("region", "eu").Req()},
	})
}

func TestIsolation(t *testing.T) {
	h := MakeHost().Name("h").Obj()
	runFilterCases(t, Isolation{}, []filterCase{
		{name: "plain vm on plain host", host: h, alloc: ptr(MakeAlloc("h").VMs("p/x").Obj()), req: MakeVM("p/a").Req()},
		{name: "domain vm on empty host", host: h, req: MakeVM("p/a").Domain("pci").Req()},
		{name: "domain vm with its domain", host: h, alloc: ptr(MakeAlloc("h").VMs("q/x").Domain("pci", 1).Obj()), req: MakeVM("p/a").Domain("pci").Req()},
		{name: "domain vm with other domain", host: h, alloc: ptr(MakeAlloc("h").VMs("q/x").Domain("hipaa", 1).Obj()),
			req: MakeVM("p/a").Domain("pci").Req(), want: `runs VMs outside isolation domain "pci"`},
		{name: "domain vm with plain vm", host: h, alloc: ptr(MakeAlloc("h").VMs("q/x").Obj()),
			req: MakeVM("p/a").Domain("pci").Req(), want: `runs VMs outside isolation domain "pci"`},
		{name: "domain vm on mixed host", host: h, alloc: ptr(MakeAlloc("h").VMs("q/x", "q/y").Domain("pci", 1).Obj()),
			req: MakeVM("p/a").Domain("pci").Req(), want: `runs VMs outside isolation domain "pci"`},
		{name: "plain vm with domain vm", host: h, alloc: ptr(MakeAlloc("h").VMs("q/x").Domain("pci", 1).Obj()),
			req: MakeVM("p/a").Req(), want: "runs VMs of an isolation domain (this VM has none)"},
	})
}

func TestAffinityFilter(t *testing.T) {
	h := MakeHost().Name("h").Obj()
	with := ptr(MakeAlloc("h").VMs("p/x", "p/y").Group("p/web", 2).Obj())
	runFilterCases(t, Affinity{}, []filterCase{
		{name: "no group", host: h, alloc: with, req: MakeVM("p/a").Req()},
		{name: "hard affinity joins", host: h, alloc: with, req: MakeVM("p/a").Group("web", model.AffinityHard).Req()},
		{name: "anti-affinity refuses", host: h, alloc: with, req: MakeVM("p/a").Group("web", model.AntiAffinityHard).Req(),
			want: `already runs a member of anti-affinity group "p/web"`},
		{name: "groups are per project", host: h, alloc: with, req: MakeVM("q/a").Group("web", model.AntiAffinityHard).Req()},
		{name: "anti-affinity on empty host", host: h, req: MakeVM("p/a").Group("web", model.AntiAffinityHard).Req()},
		{name: "max per host reached", host: h, alloc: with, req: MakeVM("p/a").Group("web", "").MaxPerHost(2).Req(),
			want: `already runs 2 members of group "p/web" (max per host)`},
		{name: "max per host not reached", host: h, alloc: with, req: MakeVM("p/a").Group("web", model.AffinitySoft).MaxPerHost(3).Req()},
		{name: "soft anti-affinity is not a filter", host: h, alloc: with, req: MakeVM("p/a").Group("web", model.AntiAffinitySoft).Req()},
	})
}

func TestStorage(t *testing.T) {
	h := MakeHost().Name("h").Pool("fast", "ssd", 100).Pool("bulk", "hdd", 0).Obj()
	runFilterCases(t, Storage{}, []filterCase{
		{name: "no pool asked", host: MakeHost().Obj(), req: MakeVM("p/a").Disk(10, "", "").Req()},
		{name: "pool present", host: h, req: MakeVM("p/a").Disk(10, "fast", "").Req()},
		{name: "tier present", host: h, req: MakeVM("p/a").Disk(10, "", "hdd").Req()},
		{name: "pool and tier", host: h, req: MakeVM("p/a").Disk(10, "fast", "ssd").Req()},
		{name: "pool with wrong tier", host: h, req: MakeVM("p/a").Disk(10, "fast", "hdd").Req(), want: `no storage pool "fast" (tier "hdd")`},
		{name: "missing tier", host: h, req: MakeVM("p/a").Disk(10, "", "nvme").Req(), want: `no storage tier "nvme"`},
		{name: "pool full", host: h, req: MakeVM("p/a").Disk(80, "fast", "").Disk(30, "", "ssd").Req(),
			want: `not enough room in pool "fast", tier "ssd" (needs 110GiB, most free 20GiB)`},
		{name: "unreported free is not checked", host: h, req: MakeVM("p/a").Disk(900, "bulk", "").Req()},
	})
}

func TestNetwork(t *testing.T) {
	plain := MakeHost().Name("h").Obj()
	overlay := MakeHost().Name("h").Overlay("192.0.2.1").Obj()
	listed := MakeHost().Name("h").Networks("br-lan").Obj()
	runFilterCases(t, Network{}, []filterCase{
		{name: "no NIC", host: plain, req: MakeVM("p/a").Req()},
		{name: "vpool network on a host serving them", host: overlay, req: MakeVM("p/a").NIC("net1", "10.0.0.2").Req()},
		{name: "vpool network on a host without", host: plain, req: MakeVM("p/a").NIC("net1", "10.0.0.2").Req(),
			want: "serves no vpool networks (its agent has no --overlay-address or --vlan-uplink)"},
		{name: "host network on a host not reporting its networks", host: plain, req: MakeVM("p/a").NIC("br-lan", "").Req()},
		{name: "host network listed", host: listed, req: MakeVM("p/a").NIC("br-lan", "").Req()},
		{name: "host network not listed", host: listed, req: MakeVM("p/a").NIC("br-dmz", "").Req(), want: "lacks host network br-dmz"},
	})
}

func TestPin(t *testing.T) {
	runFilterCases(t, Pin{}, []filterCase{
		{name: "no pin", host: MakeHost().Name("h").Obj(), req: MakeVM("p/a").Req()},
		{name: "pinned here", host: MakeHost().Name("h").Obj(), req: MakeVM("p/a").Pin("h").Req()},
		{name: "pinned to missing host", host: MakeHost().Name("h").Obj(), req: MakeVM("p/a").Pin("zz").Req(),
			want: `the requested host "zz" does not exist`},
	})
}

func TestScores(t *testing.T) {
	hosts := []model.Host{
		MakeHost().Name("full").CPUs(16).Memory(64).Label("zone", "a").Obj(),
		MakeHost().Name("half").CPUs(16).Memory(64).Label("zone", "b").Obj(),
		MakeHost().Name("empty").CPUs(16).Memory(64).Obj(),
		MakeHost().Name("big-empty").CPUs(64).Memory(64).Obj(),
	}
	snap := newSnap(t, hosts,
		MakeAlloc("full").Used(48, 48, 0).VMs("p/1").Group("p/g", 1).Obj(),
		MakeAlloc("half").Used(8, 32, 0).VMs("p/2").Obj())
	score := func(sc Scorer, r Request, host string) float64 {
		c := &Cycle{}
		c.reset(snap)
		if err := c.compile(r); err != nil {
			t.Fatal(err)
		}
		return sc.Score(c, snap.HostIndex(host))
	}
	vm := MakeVM("p/a").CPUs(4).Memory(8).Req()
	cases := []struct {
		name          string
		sc            Scorer
		req           Request
		better, worse string
	}{
		{"binpack prefers fuller", Binpack{}, vm, "full", "half"},
		{"spread prefers emptier", Spread{}, vm, "empty", "half"},
		{"balance prefers even cpu/mem", Balance{}, vm, "full", "half"},
		{"energy prefers running hosts", Energy{}, vm, "half", "empty"},
		{"energy prefers small empty hosts", Energy{}, vm, "empty", "big-empty"},
		{"preferred labels", Labels{}, MakeVM("p/a").Prefer("zone", "b").Req(), "half", "full"},
		{"soft affinity", Affinity{}, MakeVM("p/a").Group("g", model.AffinitySoft).Req(), "full", "half"},
		{"soft anti-affinity", Affinity{}, MakeVM("p/a").Group("g", model.AntiAffinitySoft).Req(), "half", "full"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, w := score(tc.sc, tc.req, tc.better), score(tc.sc, tc.req, tc.worse)
			if !(b > w) || b < 0 || b > 1 || w < 0 {
				t.Errorf("%s=%v should beat %s=%v, both in [0,1]", tc.better, b, tc.worse, w)
			}
		})
	}
}

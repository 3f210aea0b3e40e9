package ha

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

var t0 = time.Date(2026, 12, 6, 6, 0, 0, 0, time.UTC)

func TestHostSteps(t *testing.T) {
	tm := Timings{Suspect: 2 * time.Second, Fence: 4 * time.Second, Margin: time.Second}
	s := func(from, to model.HostState) string { return string(from) + "→" + string(to) }
	cases := []struct {
		name    string
		state   model.HostState
		age     time.Duration
		confirm bool
		want    []string
	}{
		{"fresh ready host stays", model.HostReady, time.Second, false, nil},
		{"ready goes suspect", model.HostReady, 2 * time.Second, false, []string{s("ready", "suspect")}},
		{"suspect before fence stays", model.HostSuspect, 3 * time.Second, false, nil},
		{"suspect goes failed at the fence timeout", model.HostSuspect, 4 * time.Second, false, []string{s("suspect", "failed")}},
		{"failed waits for the margin", model.HostFailed, 4*time.Second + 999*time.Millisecond, false, nil},
		{"failed goes fenced after fence + margin", model.HostFailed, 5 * time.Second, false, []string{s("failed", "fenced")}},
		{"a fence command fences at once", model.HostFailed, 4 * time.Second, true, []string{s("failed", "fenced")}},
		{"a fence command does not skip suspect", model.HostReady, 3 * time.Second, true,
			[]string{s("ready", "suspect"), s("suspect", "failed"), s("failed", "fenced")}},
		{"a long silence records every step", model.HostReady, time.Minute, false,
			[]string{s("ready", "suspect"), s("suspect", "failed"), s("failed", "fenced")}},
		{"down is handled as failed", model.HostDown, 5 * time.Second, false, []string{s("down", "fenced")}},
		{"fenced host renewing again is ready", model.HostFenced, 0, false, []string{s("fenced", "ready")}},
		{"suspect host renewing again is ready", model.HostSuspect, time.Second, false, []string{s("suspect", "ready")}},
		{"fenced stays fenced", model.HostFenced, time.Hour, false, nil},
		{"maintenance is not HA's", model.HostMaintenance, time.Hour, false, nil},
		{"standby is not HA's", model.HostStandby, time.Hour, false, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			steps := HostSteps(tm, t0, []Host{{Name: "h", State: c.state, LastRenewal: t0.Add(-c.age), FenceConfirmed: c.confirm}})
			var got []string
			for _, st := range steps {
				got = append(got, s(st.From, st.To))
				if st.Host != "h" || st.Reason == "" {
					t.Errorf("step %+v: want host h and a reason", st)
				}
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("steps = %v, want %v", got, c.want)
			}
		})
	}
}

// The safety order: with any valid policy, no host is fenced before its
// agent's fence timeout has passed since the last renewal the decider
// saw, plus the margin (unless a fence command confirmed it).
func TestNoFenceBeforeTimeoutAndMargin(t *testing.T) {
	for _, p := range []model.HAPolicy{model.DefaultHAPolicy(), {HeartbeatMillis: 200, SuspectMillis: 500, FenceMillis: 1000, MarginMillis: 200},
		{HeartbeatMillis: 3000, SuspectMillis: 9000, FenceMillis: 30000, MarginMillis: 5000}} {
		if err := p.Validate(); err != nil {
			t.Fatal(err)
		}
		tm := TimingsOf(p)
		for age := time.Duration(0); age < 2*(tm.Fence+tm.Margin); age += 50 * time.Millisecond {
			for _, st := range HostSteps(tm, t0, []Host{{Name: "h", State: model.HostReady, LastRenewal: t0.Add(-age)}}) {
				if st.To == model.HostFenced && age < tm.Fence+tm.Margin {
					t.Fatalf("%v: fenced at age %s", p, age)
				}
			}
		}
	}
}

func TestLevel(t *testing.T) {
	shared := []model.StoragePoolRef{{Name: "nfs", Shared: true}, {Name: "local"}}
	localFirst := []model.StoragePoolRef{{Name: "local"}, {Name: "nfs", Shared: true}}
	disk := func(pool string) []model.Disk { return []model.Disk{{Name: "root", Pool: pool, Size: model.GiB}} }
	cases := []struct {
		name      string
		spec      model.VMSpec
		pools     []model.StoragePoolRef
		want, why string
	}{
		{"shared default is medium", model.VMSpec{Disks: disk("nfs")}, shared, model.HAMedium, ""},
		{"shared high", model.VMSpec{HA: model.HAHigh, Disks: disk("nfs")}, shared, model.HAHigh, ""},
		{"local disk cannot", model.VMSpec{HA: model.HAHigh, Disks: disk("local")}, shared, model.HAOff, "local storage"},
		{"pool-less disk on a shared first pool", model.VMSpec{Disks: disk("")}, shared, model.HAMedium, ""},
		{"pool-less disk on a local first pool", model.VMSpec{Disks: disk("")}, localFirst, model.HAOff, "local storage"},
		{"no disks restarts anywhere", model.VMSpec{}, nil, model.HAMedium, ""},
		{"off is off", model.VMSpec{HA: model.HAOff, Disks: disk("nfs")}, shared, model.HAOff, "off"},
		{"unknown pool is not shared", model.VMSpec{Disks: disk("gone")}, shared, model.HAOff, "local storage"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, why := Level(&c.spec, c.pools)
			if got != c.want || !strings.Contains(why, c.why) || (c.why == "") != (why == "") {
				t.Fatalf("Level = %s (%q), want %s (%q)", got, why, c.want, c.why)
			}
		})
	}
}

// fakePlacer places on the host with the most free memory, one memory
// figure per host.
type fakePlacer struct{ free map[string]model.Bytes }

func (f *fakePlacer) Place(vm VM) (string, string) {
	best := ""
	for h, m := range f.free {
		if m >= vm.Spec.Memory && (best == "" || m > f.free[best] || (m == f.free[best] && h < best)) {
			best = h
		}
	}
	if best == "" {
		return "", fmt.Sprintf("%s memory free nowhere", vm.Spec.Memory)
	}
	return best, ""
}

func (f *fakePlacer) Assume(vm VM, host string) { f.free[host] -= vm.Spec.Memory }

func TestPlanRestarts(t *testing.T) {
	pools := []model.StoragePoolRef{{Name: "nfs", Shared: true}, {Name: "local"}}
	vm := func(name, level string, prio int, mem model.Bytes, pool string) VM {
		return VM{Key: "p/" + name, Host: "dead", Pools: pools, Spec: &model.VMSpec{HA: level, HAPriority: prio, Memory: mem,
			Disks: []model.Disk{{Name: "root", Pool: pool}}}}
	}
	vms := []VM{
		vm("low", model.HALow, 0, 2*model.GiB, "nfs"),
		vm("med-a", "", 0, 2*model.GiB, "nfs"),
		vm("high-1", model.HAHigh, 1, 2*model.GiB, "nfs"),
		vm("high-9", model.HAHigh, 9, 2*model.GiB, "nfs"),
		vm("local", model.HAHigh, 0, model.GiB, "local"),
		vm("off", model.HAOff, 0, model.GiB, "nfs"),
		vm("med-b", model.HAMedium, 0, 2*model.GiB, "nfs"),
	}
	p := &fakePlacer{free: map[string]model.Bytes{"a": 4 * model.GiB, "b": 4 * model.GiB}}
	plan := PlanRestarts(vms, p)
	var order []string
	for _, r := range plan.Restarts {
		order = append(order, r.VM+"@"+r.To)
		if r.From != "dead" {
			t.Errorf("%s from %s", r.VM, r.From)
		}
	}
	// 8 GiB free: the two high, then medium by key; low gets nothing.
	want := []string{"p/high-9@a", "p/high-1@b", "p/med-a@a", "p/med-b@b"}
	if !reflect.DeepEqual(order, want) {
		t.Fatalf("restarts = %v, want %v", order, want)
	}
	stuck := map[string]string{}
	for _, s := range plan.Stuck {
		stuck[s.VM] = s.Reason
	}
	for vm, why := range map[string]string{"p/local": "local storage", "p/off": "off", "p/low": "no host fits"} {
		if !strings.Contains(stuck[vm], why) {
			t.Errorf("%s stuck for %q, want %q", vm, stuck[vm], why)
		}
	}
	if len(stuck) != 3 {
		t.Fatalf("stuck = %v", stuck)
	}
}

func TestCheckReserve(t *testing.T) {
	h := func(name string, freeCPU int, freeGiB int64, protCPU int, protGiB int64) HostLoad {
		return HostLoad{Name: name, Free: model.Resources{CPUs: freeCPU, Memory: model.Bytes(freeGiB) * model.GiB},
			Protected: model.Resources{CPUs: protCPU, Memory: model.Bytes(protGiB) * model.GiB}}
	}
	three := []HostLoad{h("a", 8, 16, 8, 16), h("b", 8, 16, 8, 16), h("c", 8, 16, 0, 0)}
	cases := []struct {
		name  string
		hosts []HostLoad
		n     int
		add   model.Resources
		ok    bool
		worst []string
	}{
		{"no reserve asked", three, 0, model.Resources{}, true, nil},
		{"one failure fits", three, 1, model.Resources{}, true, []string{"a"}},
		{"a create that eats the reserve", three, 1, model.Resources{CPUs: 9, Memory: model.GiB}, false, []string{"a"}},
		{"two failures do not fit", three, 2, model.Resources{}, false, []string{"a", "b"}},
		{"as many failures as hosts", three, 3, model.Resources{}, false, []string{"a", "b", "c"}},
		{"memory bound", []HostLoad{h("a", 64, 1, 1, 30), h("b", 64, 20, 1, 1)}, 1, model.Resources{}, false, []string{"a"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := CheckReserve(c.hosts, c.n, c.add)
			if r.OK != c.ok || (c.worst != nil && !reflect.DeepEqual(r.Worst, c.worst)) {
				t.Fatalf("CheckReserve = %+v, want ok %v worst %v", r, c.ok, c.worst)
			}
			if err := r.Err(); (err == nil) != c.ok || (err != nil && !strings.Contains(err.Error(), "ha.tolerateHostFailures")) {
				t.Fatalf("Err = %v", err)
			}
		})
	}
}

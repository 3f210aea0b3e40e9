package server

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// TestBeatReportsAsBeat: a heartbeat applied from its reports (in place
// when the host reports the same VMs in the same order) leaves the hub
// answering what a beat built into a new map does: random beats of 6
// hosts, VMs coming, going, moving between hosts, reported twice, in
// another order or not assigned to the host.
func TestBeatReportsAsBeat(t *testing.T) {
	rnd := rand.New(rand.NewPCG(7, 8))
	a, b := newUsageHub(), newUsageHub()
	t0 := time.Unix(1.7e9, 0)
	sets := map[string][]api.VMReport{}
	var keys []string
	for i := range 40 {
		keys = append(keys, fmt.Sprintf("p%d/v%02d", i%3, i))
	}
	for step := range 3000 {
		host := fmt.Sprintf("h%d", rnd.IntN(6))
		reps := sets[host]
		switch rnd.IntN(8) {
		case 0: // another set
			reps = nil
			for range rnd.IntN(8) {
				k := keys[rnd.IntN(len(keys))]
				p, n := k[:2], k[3:]
				reps = append(reps, api.VMReport{Project: p, Name: n})
			}
		case 1: // another order
			reps = append([]api.VMReport(nil), reps...)
			rnd.Shuffle(len(reps), func(i, j int) { reps[i], reps[j] = reps[j], reps[i] })
		}
		sets[host] = reps
		beat := make([]api.VMReport, len(reps))
		mine := make([]bool, len(reps))
		vms := map[string]model.VMUsage{}
		for i, r := range reps {
			r.Usage = model.VMUsage{CPUPercent: float64(step), NetRx: int64(i)}
			beat[i] = r
			mine[i] = (r.Name[1]+byte(len(host)))%5 != 0 // some not assigned here
			if mine[i] {
				vms[r.Project+"/"+r.Name] = r.Usage
			}
		}
		now := t0.Add(time.Duration(step) * time.Second)
		hu := model.HostUsage{CPUPercent: float64(step)}
		a.beatReports(host, now, 31, hu, beat, mine)
		b.beat(host, now, 31, hu, vms)
		for _, k := range keys {
			ua, ta, oka := a.vm(k)
			ub, tb, okb := b.vm(k)
			if ua != ub || !ta.Equal(tb) || oka != okb {
				t.Fatalf("step %d: %s from reports %v %v %v, from a map %v %v %v", step, k, ua, ta, oka, ub, tb, okb)
			}
		}
		if ha, oka := a.host(host); !oka || ha.usage != hu || !ha.seen.Equal(now) {
			t.Fatalf("step %d: host %s %+v %v", step, host, ha, oka)
		}
	}
	sa, ga := a.samples("s", t0.Add(time.Hour))
	sb, gb := b.samples("s", t0.Add(time.Hour))
	if !reflect.DeepEqual(sa, sb) || !reflect.DeepEqual(ga, gb) {
		t.Fatalf("samples from reports %+v %v, from maps %+v %v", sa, ga, sb, gb)
	}
}

// TestBeatAllocations: a host that reports the same 10 VMs beat after
// beat, in the same order or not, costs the hub no allocation a beat (a new map, a key a VM and a
// record before: 13 allocations), nor the check of which VMs are the
// host's (a key a VM before).
func TestBeatAllocations(t *testing.T) {
	ts := startServer(t, nil)
	u := ts.hub
	reps := make([]api.VMReport, 10)
	for i := range reps {
		reps[i] = api.VMReport{Project: "default", Name: fmt.Sprintf("vm-%04d", i), Usage: model.VMUsage{CPUPercent: float64(i)}}
	}
	ts.view.c.Read(func(int64) {}) // the view's maps exist
	mine := make([]bool, 0, len(reps))
	now := time.Now()
	mine = ts.assignedIn("h1", reps, mine)
	for i := range mine {
		mine[i] = true // as if assigned: the hub's part alone
	}
	u.beatReports("h1", now, 31, model.HostUsage{}, reps, mine)
	if n := testing.AllocsPerRun(100, func() {
		reps[3].Usage.CPUPercent++
		u.beatReports("h1", now, 31, model.HostUsage{}, reps, mine)
	}); n != 0 {
		t.Fatalf("a beat of the same VMs allocates %.0f times in the hub, want 0", n)
	}
	if v, _, ok := u.vm("default/vm-0003"); !ok || v.CPUPercent != reps[3].Usage.CPUPercent {
		t.Fatalf("the beat in place was not kept: %+v %v", v, ok)
	}
	// the simulated fleet reports its VMs in a map's order: another
	// order each beat, still in place
	rnd := rand.New(rand.NewPCG(1, 1))
	if n := testing.AllocsPerRun(100, func() {
		rnd.Shuffle(len(reps), func(i, j int) { reps[i], reps[j] = reps[j], reps[i] })
		reps[3].Usage.CPUPercent++
		u.beatReports("h1", now, 31, model.HostUsage{}, reps, mine)
	}); n != 0 {
		t.Fatalf("a beat of the same VMs in another order allocates %.0f times in the hub, want 0", n)
	}
	if v, _, ok := u.vm(reps[3].Project + "/" + reps[3].Name); !ok || v.CPUPercent != reps[3].Usage.CPUPercent {
		t.Fatalf("the beat in another order was not kept: %+v %v", v, ok)
	}
	if n := testing.AllocsPerRun(100, func() { mine = ts.assignedIn("h1", reps, mine) }); n != 0 {
		t.Fatalf("finding a beat's assigned VMs allocates %.0f times, want 0", n)
	}
}

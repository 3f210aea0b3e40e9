package scheduler

import (
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// allocOf returns the allocation of host that holds the requests.
func allocOf(host string, reqs ...Request) model.Allocation {
	a := model.Allocation{Host: host, VMs: map[string]bool{}}
	for _, r := range reqs {
		a.AddVM(r.Key, r.Spec)
	}
	return a
}

func TestCheckOnAndCheckMove(t *testing.T) {
	anti := func(key string) Request { return MakeVM(key).Group("g", model.AntiAffinityHard).Req() }
	hard := func(key string) Request { return MakeVM(key).Group("h", model.AffinityHard).Req() }
	hosts := []model.Host{
		MakeHost().Name("h1").Label("region", "eu").Obj(),
		MakeHost().Name("h2").Label("region", "us").Obj(),
		MakeHost().Name("h3").Label("region", "eu").Obj(),
		MakeHost().Name("h4").Memory(4).Obj(),
		MakeHost().Name("cordoned").Cordon().Obj(),
		MakeHost().Name("h5").Obj(),
		MakeHost().Name("h6").Obj(),
	}
	a1, a2 := anti("p/a1"), anti("p/a2")
	one := MakeVM("p/one").Group("solo", model.AffinityHard).Req()
	pci := MakeVM("p/pci").Domain("pci").Req()
	allocs := []model.Allocation{
		allocOf("h1", a1, hard("p/x1"), hard("p/x2"), one),
		allocOf("h2", a2),
		allocOf("h5", pci),
		allocOf("h6", MakeVM("p/plain").Req()),
	}
	for _, tc := range []struct {
		name     string
		r        Request
		from, to string
		want     string // "" or a fragment of the refusal
	}{
		{"fits", MakeVM("p/n").Req(), "", "h3", ""},
		{"required label", MakeVM("p/n").Require("region", "eu").Req(), "", "h2", "labels: missing required labels region=eu"},
		{"pinned elsewhere", MakeVM("p/n").Pin("h3").Req(), "", "h1", "pin: not the requested host"},
		{"not ready", MakeVM("p/n").Req(), "", "cordoned", "hoststate: cordoned"},
		{"capacity", MakeVM("p/n").Memory(8).Req(), "", "h4", "fit: insufficient memory"},
		{"unknown host", MakeVM("p/n").Req(), "", "nope", "not known"},
		{"anti-affinity member elsewhere", MakeVM("p/n").Group("g", model.AntiAffinityHard).Req(), "", "h2", "affinity: already runs a member"},
		{"isolation: outsider onto a domain host", MakeVM("p/n").Req(), "", "h5", "isolation"},
		{"isolation: domain VM onto a shared host", MakeVM("p/n").Domain("pci").Req(), "", "h6", "isolation"},
		{"move: anti-affinity member onto a member's host", a1, "h1", "h2", "affinity: already runs a member"},
		{"move: anti-affinity member to a free host", a1, "h1", "h3", ""},
		{"move: one of two hard-affinity members away", hard("p/x1"), "h1", "h3", "affinity: affinity group"},
		{"move: the only member of a hard-affinity group", one, "h1", "h3", ""},
		{"move: the only domain VM may leave its host", pci, "h5", "h6", "isolation"},
		{"move: the only domain VM to an empty host", pci, "h5", "h3", ""},
		{"move onto its own host", a1, "h1", "h1", "already"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSched(t)
			snap := newSnap(t, hosts, allocs...)
			before := snap.Clone()
			var got string
			if tc.from == "" {
				got = s.CheckOn(snap, tc.r, tc.to)
			} else {
				got = s.CheckMove(snap, tc.r, tc.from, tc.to)
			}
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("verdict %q, want %q", got, tc.want)
			}
			for i := range snap.hosts {
				if snap.hosts[i] != before.hosts[i] {
					t.Errorf("host %s changed by the check: %+v → %+v", snap.names[i], before.hosts[i], snap.hosts[i])
				}
			}
			for g := range snap.groupHosts {
				if len(snap.groupHosts[g]) != len(before.groupHosts[g]) {
					t.Errorf("group %s hosts changed", snap.groupNames[g])
				}
			}
		})
	}
}

// TestMoveCheckSeesTheRoundsHolds: a move planned earlier in a round holds
// its target (its VM still runs on its source), so later moves see it.
func TestMoveCheckSeesTheRoundsHolds(t *testing.T) {
	s := newSched(t)
	a1, a2 := MakeVM("p/a1").Group("g", model.AntiAffinityHard).Req(), MakeVM("p/a2").Group("g", model.AntiAffinityHard).Req()
	big := MakeVM("p/big").Memory(40).Req()
	hosts := []model.Host{MakeHost().Name("h1").Obj(), MakeHost().Name("h2").Obj(), MakeHost().Name("h3").Obj()}
	snap := newSnap(t, hosts, allocOf("h1", a1, big), allocOf("h2", a2))
	vms := []MoveVM{{Key: a1.Key, Spec: a1.Spec, Host: "h1"}, {Key: a2.Key, Spec: a2.Spec, Host: "h2"}, {Key: big.Key, Spec: big.Spec, Host: "h1"}}
	mc := s.NewMoveCheck(snap, []string{"h1", "h2", "h3"}, vms)
	steps := []struct {
		do       func()
		v, h     int
		feasible bool
	}{
		{nil, 0, 2, true},                         // a1 → h3
		{nil, 1, 2, true},                         // a2 → h3
		{nil, 0, 1, false},                        // a1 → h2: a2 is there
		{nil, 0, 0, true},                         // a1 stays home
		{func() { mc.Hold(0, 2) }, 1, 2, false},   // a1 holds h3: a2 may not join
		{nil, 2, 2, true},                         // big (40 of 64 GiB) still fits h3
		{func() { mc.Hold(2, 1) }, 2, 2, true},    // big holds h2 too: h3 unaffected
		{func() { mc.Release(0, 2) }, 1, 2, true}, // a1's move dropped: a2 may go
		{func() { mc.Hold(2, 2) }, 0, 2, true},    // big holds h3
		{nil, 2, 1, true},                         // big holds h2 already: not counted twice
	}
	for i, st := range steps {
		if st.do != nil {
			st.do()
		}
		if got := mc.Feasible(st.v, st.h); got != st.feasible {
			t.Fatalf("step %d: Feasible(%d, %d) = %v (%s), want %v", i, st.v, st.h, got, mc.Why(st.v, st.h), st.feasible)
		}
	}
	if snap.hosts[2].memUsed != 0 {
		t.Error("MoveCheck changed the caller's snapshot")
	}
}

package scheduler

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

func TestScarcity(t *testing.T) {
	var hosts []model.Host
	for i := range 20 {
		b := MakeHost().Name(fmt.Sprintf("h%02d", i)).Label("rack", fmt.Sprintf("r%d", i))
		if i == 0 {
			b.Label("gpu", "a100")
		}
		hosts = append(hosts, b.Obj())
	}
	// The GPU host is the fullest: binpack alone would pick it.
	snap := newSnap(t, hosts, MakeAlloc("h00").Used(8, 32, 0).VMs("p/x").Obj(), MakeAlloc("h05").Used(4, 16, 0).VMs("p/y").Obj())
	s := newSched(t)
	cases := []struct {
		name string
		req  Request
		want string
	}{
		{"ordinary vm avoids the gpu host", MakeVM("p/a").Req(), "h05"},
		{"gpu vm takes it", MakeVM("p/a").Require("gpu", "a100").Req(), "h00"},
		{"rack is not rare", MakeVM("p/a").Require("rack", "r5").Req(), "h05"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if d := s.Place(snap, tc.req); d.Host != tc.want {
				t.Errorf("got %q, want %q: %+v %s", d.Host, tc.want, d.Explanation.Candidates, d.Explanation.Summary)
			}
		})
	}
	if s2 := newSched(t, WithPlugins("binpack")); s2.Place(snap, MakeVM("p/a").Req()).Host != "h00" {
		t.Error("without scarcity binpack should take the fullest (gpu) host")
	}
}

// broken is a custom filter that breaks on one host: an Error status
// aborts the decision with an error, unlike Unschedulable.
type broken struct{ on string }

func (broken) Name() string { return "broken" }
func (b broken) Filter(c *Cycle, h int) Status {
	if c.Snapshot().HostName(h) == b.on {
		return Status{Code: Error, Err: errors.New("disk inventory unreadable")}
	}
	return ok
}
func (broken) Explain(*Cycle, uint8, int64) string { return "" }

func TestCustomPluginError(t *testing.T) {
	reg := Builtins()
	reg["broken"] = func() Plugin { return broken{on: "b"} }
	s, err := New(model.DefaultPolicy(), WithRegistry(reg), WithPlugins("broken", "binpack"))
	if err != nil {
		t.Fatal(err)
	}
	snap := newSnap(t, []model.Host{MakeHost().Name("a").Obj(), MakeHost().Name("b").Obj()})
	d := s.Place(snap, Request{Key: "p/a", Spec: &model.VMSpec{VCPUs: 1, Memory: model.GiB}, Exhaustive: true})
	if !errors.Is(d.Err, ErrPlugin) || d.Placed() || !strings.Contains(d.Err.Error(), `broken on host "b": disk inventory unreadable`) {
		t.Errorf("err %v, host %q", d.Err, d.Host)
	}
	if !strings.HasPrefix(d.Explanation.Summary, "error: ") {
		t.Errorf("summary %q", d.Explanation.Summary)
	}
}

// Place only reads the snapshot: several goroutines may decide on one
// snapshot at once (run with -race), and they agree.
func TestConcurrentPlace(t *testing.T) {
	rng := newRand(9)
	hosts, allocs := randomCluster(rng, 300)
	snap := newSnap(t, hosts, allocs...)
	s := newSched(t)
	reqs := make([]Request, 200)
	for i := range reqs {
		reqs[i] = randomVM(rng, i)
	}
	want := make([]string, len(reqs))
	for i, r := range reqs {
		want[i] = s.Place(snap, r).Host
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for i, r := range reqs {
				if got := s.Place(snap, r).Host; got != want[i] {
					errs <- fmt.Errorf("vm %d: %q, then %q", i, want[i], got)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

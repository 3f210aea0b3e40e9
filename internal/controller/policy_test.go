package controller

import (
	"math"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// TestSchedulingUsesStoredPolicy: the scheduling controller places by the
// policy stored at /vpool/cluster/policy — strategy, ratios and weights —
// and follows a change of it without a restart.
func TestSchedulingUsesStoredPolicy(t *testing.T) {
	tests := []struct {
		name   string
		policy model.Policy
		vcpus  int
		check  func(t *testing.T, e *env)
	}{
		{"binpack packs", model.Policy{Strategy: "binpack"}, 1, func(t *testing.T, e *env) {
			if a, b := e.vm("a").Status.Host, e.vm("b").Status.Host; a != b {
				t.Errorf("binpack put a on %s, b on %s", a, b)
			}
		}},
		{"spread spreads", model.Policy{Strategy: "spread"}, 1, func(t *testing.T, e *env) {
			if a, b := e.vm("a").Status.Host, e.vm("b").Status.Host; a == b {
				t.Errorf("spread put a and b both on %s", a)
			}
		}},
		{"cpu ratio binds", model.Policy{Strategy: "binpack", Ratios: model.Ratios{CPU: 0.5}}, 6, func(t *testing.T, e *env) {
			// 8 CPUs × 0.5 = 4 vCPUs per host: a 6-vCPU VM fits nowhere.
			if h := e.vm("a").Status.Host; h != "" {
				t.Errorf("a placed on %s past capacity × ratio", h)
			}
		}},
		{"weights", model.Policy{Strategy: "binpack", Weights: map[string]float64{"balance": 0, "binpack": 5}}, 1, func(t *testing.T, e *env) {
			// 1 vCPU of 8 × 4.0 and 1 GiB of 32 GiB: binpack's raw score is 1/32.
			c := e.explanation(e.vm("a")).Candidates[0]
			if c.Parts["balance"] != 0 || math.Abs(c.Parts["binpack"]-5.0/32) > 0.001 {
				t.Errorf("score parts %v: want balance off, binpack weighted 5", c.Parts)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.setPolicy(tc.policy)
			e.addHost("h1", 8, 32*model.GiB, nil)
			e.addHost("h2", 8, 32*model.GiB, nil)
			cfg := e.config("a", nil)
			cfg.Placer = NewSchedulerPlacer()
			e.start(cfg)
			for _, name := range []string{"a", "b"} {
				e.createVM(name, tc.vcpus, model.GiB)
				eventually(t, name+" decided", func() bool { return e.explanation(e.vm(name)) != nil })
			}
			tc.check(t, e)
			e.checkAllocations()
		})
	}
	t.Run("change followed", func(t *testing.T) {
		e := newEnv(t)
		e.setPolicy(model.Policy{Strategy: "binpack", Ratios: model.Ratios{CPU: 0.5}})
		e.addHost("h1", 8, 32*model.GiB, nil)
		cfg := e.config("a", nil)
		cfg.Placer = NewSchedulerPlacer()
		e.start(cfg)
		e.createVM("big", 6, model.GiB)
		eventually(t, "big explained", func() bool { return e.vm("big").Status.Explanation != nil })
		if h := e.vm("big").Status.Host; h != "" {
			t.Fatalf("big placed on %s at ratio 0.5", h)
		}
		e.setPolicy(model.Policy{Strategy: "binpack", Ratios: model.Ratios{CPU: 1}})
		eventually(t, "big placed after the ratio rose", func() bool { return e.vm("big").Status.Host == "h1" })
		e.checkAllocations()
	})
}

// TestStalePolicyNeverCommits: the cache's watches are independent, so a
// pending VM can reach it before a policy change written earlier. The
// commit is guarded on the policy's revision: a placement decided under
// the old policy loses, the policy is re-read, and the VM is decided
// again under the stored one.
func TestStalePolicyNeverCommits(t *testing.T) {
	ctx := t.Context()
	e := newEnv(t)
	e.addHost("h1", 4, 16*model.GiB, nil)
	e.createVM("big", 6, model.GiB) // fits at the default CPU ratio 4, not at 1
	e.setPolicy(model.Policy{Strategy: "binpack", Ratios: model.Ratios{CPU: 1, Memory: 1, Disk: 1}})
	cfg := e.config("a", nil)
	cfg.Placer = NewSchedulerPlacer()
	m := New(cfg)
	c := newCache(m.log)
	for _, src := range c.sources() {
		kvs, _, err := e.st.List(ctx, src.prefix)
		if err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		src.reset(kvs)
		c.mu.Unlock()
	}
	c.policy, c.polRev = model.DefaultPolicy(), 0 // the policy watch lags
	r := newReconciler(m, m.newTerm(), c)
	r.repaired = true
	if err := r.schedule(ctx); err != nil {
		t.Fatal(err)
	}
	vm := e.vm("big")
	if vm.Status.Host != "" || vm.Status.Explanation == nil {
		t.Fatalf("big on %q under a stale policy (explanation %+v)", vm.Status.Host, vm.Status.Explanation)
	}
	t.Logf("big: %s", vm.Status.Explanation.Summary)
	if _, rev, _ := e.repo.GetPolicy(ctx); c.polRev != rev {
		t.Errorf("cache policy revision %d, stored %d", c.polRev, rev)
	}
	e.checkAllocations()
}

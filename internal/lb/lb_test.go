package lb

import (
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

func TestChooseHost(t *testing.T) {
	tests := []struct {
		name    string
		current string
		hosts   []Host
		want    string
		why     []string
	}{
		{name: "no hosts", want: "", why: []string{"no hosts"}},
		{name: "none usable says why", hosts: []Host{{Name: "a", Unusable: "cordoned"}, {Name: "b", Unusable: "cannot serve network lan: has no VXLAN overlay address"}},
			want: "", why: []string{"a: cordoned", "b: cannot serve network lan"}},
		{name: "fewest balancers first", hosts: []Host{{Name: "a", Balancers: 2}, {Name: "b", Balancers: 1, Members: 3, CPU: 90}, {Name: "c", Balancers: 3}},
			want: "b", why: []string{"b: 1 other balancer(s), 3 of its members", "next a"}},
		{name: "then fewest own members", hosts: []Host{{Name: "a", Members: 2}, {Name: "b", Members: 1, CPU: 80}},
			want: "b"},
		{name: "then CPU", hosts: []Host{{Name: "a", CPU: 50}, {Name: "b", CPU: 10}}, want: "b"},
		{name: "then name", hosts: []Host{{Name: "b"}, {Name: "a"}}, want: "a"},
		{name: "stays while usable", current: "c", hosts: []Host{{Name: "a"}, {Name: "c", Balancers: 9}}, want: "c", why: []string{"stays on c"}},
		{name: "moves when its host is unusable", current: "c", hosts: []Host{{Name: "a"}, {Name: "c", Unusable: "not alive"}},
			want: "a", why: []string{"moved from c (unusable) to a", "not c: not alive"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, why := ChooseHost(tc.current, tc.hosts)
			if got != tc.want {
				t.Fatalf("got %q (%s), want %q", got, why, tc.want)
			}
			for _, w := range tc.why {
				if !strings.Contains(why, w) {
					t.Errorf("why %q lacks %q", why, w)
				}
			}
		})
	}
}

func member(vm, state string, since *time.Time) model.LBMember {
	return model.LBMember{VM: vm, IP: "10.0.0." + vm[len(vm)-1:], State: state, DrainSince: since}
}

func TestReconcile(t *testing.T) {
	now := time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	obs := func(at time.Duration, running bool, hs map[string]model.LBMemberHealth) *model.LBObserved {
		return &model.LBObserved{At: now.Add(-at), Running: running, Members: hs}
	}
	tests := []struct {
		name string
		cur  []model.LBMember
		want []Wanted
		obs  *model.LBObserved
		out  string
		ch   string
	}{
		{name: "new members join active", want: []Wanted{{"vm2", "10.0.0.2"}, {"vm1", "10.0.0.1"}},
			out: "vm1=active vm2=active", ch: "added vm2, added vm1"},
		{name: "removed member drains", cur: []model.LBMember{member("vm1", "active", nil), member("vm2", "active", nil)}, want: []Wanted{{"vm1", "10.0.0.1"}},
			out: "vm1=active vm2=draining", ch: "draining vm2"},
		{name: "draining with connections stays", cur: []model.LBMember{member("vm2", "draining", ago(5*time.Second))},
			obs: obs(time.Second, true, map[string]model.LBMemberHealth{"vm2": {Health: "up", Sessions: 3, Draining: true}}), out: "vm2=draining"},
		{name: "report from before the drain does not count", cur: []model.LBMember{member("vm2", "draining", ago(5*time.Second))},
			obs: obs(6*time.Second, true, map[string]model.LBMemberHealth{"vm2": {Health: "up", Sessions: 0, Draining: true}}), out: "vm2=draining"},
		{name: "host not yet draining it", cur: []model.LBMember{member("vm2", "draining", ago(5*time.Second))},
			obs: obs(time.Second, true, map[string]model.LBMemberHealth{"vm2": {Health: "up", Sessions: 0}}), out: "vm2=draining"},
		{name: "idle draining member leaves", cur: []model.LBMember{member("vm2", "draining", ago(5*time.Second))},
			obs: obs(time.Second, true, map[string]model.LBMemberHealth{"vm2": {Health: "up", Sessions: 0, Draining: true}}), out: "", ch: "removed vm2 (drained: no connection left)"},
		{name: "timeout ends a drain", cur: []model.LBMember{member("vm2", "draining", ago(31*time.Second))},
			obs: obs(time.Second, true, map[string]model.LBMemberHealth{"vm2": {Health: "up", Sessions: 7, Draining: true}}), out: "", ch: "removed vm2 (drain timeout (30s) with 7 connection(s) left)"},
		{name: "host stopped serving: gone", cur: []model.LBMember{member("vm2", "draining", ago(time.Second))},
			obs: obs(0, false, nil), out: "", ch: "removed vm2 (its host no longer serves it)"},
		{name: "wanted again while draining", cur: []model.LBMember{member("vm2", "draining", ago(time.Second))}, want: []Wanted{{"vm2", "10.0.0.2"}},
			out: "vm2=active", ch: "readded vm2"},
		{name: "address follows the VM", cur: []model.LBMember{member("vm1", "active", nil)}, want: []Wanted{{"vm1", "10.0.0.9"}},
			out: "vm1=active"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, ch := Reconcile(now, tc.cur, tc.want, tc.obs, 30*time.Second)
			var got []string
			for _, m := range out {
				got = append(got, m.VM+"="+m.State)
				if m.State == model.MemberDraining && m.DrainSince == nil {
					t.Errorf("%s drains without a start", m.VM)
				}
			}
			var gch []string
			for _, c := range ch {
				s := c.Kind + " " + c.VM
				if c.Kind == "removed" {
					s += " (" + c.Reason + ")"
				}
				gch = append(gch, s)
			}
			if strings.Join(got, " ") != tc.out || strings.Join(gch, ", ") != tc.ch {
				t.Fatalf("got %v %v, want %q %q", got, gch, tc.out, tc.ch)
			}
		})
	}
	out, _ := Reconcile(now, []model.LBMember{member("vm1", "active", nil)}, []Wanted{{"vm1", "10.0.0.9"}}, nil, time.Second)
	if out[0].IP != "10.0.0.9" {
		t.Fatalf("address not followed: %+v", out)
	}
	if !Serving(out, "vm1") || Serving(out, "vm3") {
		t.Fatal("Serving")
	}
}

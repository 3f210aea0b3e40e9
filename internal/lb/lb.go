// Package lb decides for load balancers: which host serves a balancer
// (ChooseHost, with the reasons) and which members it serves in which
// state (Reconcile: new members join, removed ones drain until idle or
// their timeout). It is pure: the controller
// (internal/controller/balancers.go) hands it snapshots and applies its
// answers. It imports only internal/model and the standard library: no
// store, no clock, no I/O. HAProxy itself is driven by internal/haproxy.
package lb

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Host is one candidate host as the controller sees it.
type Host struct {
	Name string
	// Unusable says why the host cannot take a balancer ("" when it
	// can): not alive, not ready, cordoned, drained, asleep, or unable to
	// serve the balancer's network.
	Unusable string
	// Balancers counts the balancers the host serves now (this one
	// excluded); Members the balancer's members running on it; CPU its
	// measured CPU use in percent.
	Balancers int
	Members   int
	CPU       float64
}

// ChooseHost picks the host that serves a balancer, and says why.
//
// A balancer stays where it is while its host is usable (moving it
// would break its connections). Otherwise, among the usable hosts, it
// prefers, in order: the fewest balancers (HAProxy's CPU cost is per
// connection, and spreading balancers spreads it and their failure
// domains); the fewest of the balancer's own members (so that losing
// one host does not take both the balancer and a share of its members,
// the reason Octavia keeps amphorae off their members where it can);
// the least CPU in use; the name, so the choice is deterministic.
// It returns "" when no host is usable.
func ChooseHost(current string, hosts []Host) (string, string) {
	var ok []Host
	var refused []string
	for _, h := range hosts {
		if h.Unusable != "" {
			refused = append(refused, h.Name+": "+h.Unusable)
			continue
		}
		if h.Name == current {
			return current, "stays on " + current + " (usable)"
		}
		ok = append(ok, h)
	}
	sort.Strings(refused)
	if len(ok) == 0 {
		if len(hosts) == 0 {
			return "", "no hosts"
		}
		return "", "no usable host: " + strings.Join(refused, "; ")
	}
	sort.Slice(ok, func(i, j int) bool {
		a, b := ok[i], ok[j]
		if a.Balancers != b.Balancers {
			return a.Balancers < b.Balancers
		}
		if a.Members != b.Members {
			return a.Members < b.Members
		}
		if a.CPU != b.CPU {
			return a.CPU < b.CPU
		}
		return a.Name < b.Name
	})
	c := ok[0]
	why := fmt.Sprintf("%s: %d other balancer(s), %d of its members, CPU %.0f%%", c.Name, c.Balancers, c.Members, c.CPU)
	if len(ok) > 1 {
		r := ok[1]
		why += fmt.Sprintf("; next %s: %d balancer(s), %d member(s), CPU %.0f%%", r.Name, r.Balancers, r.Members, r.CPU)
	}
	if current != "" {
		why = "moved from " + current + " (unusable) to " + why
	}
	if len(refused) > 0 {
		why += "; not " + strings.Join(refused, "; ")
	}
	return c.Name, why
}

// Wanted is a member the balancer should serve: a VM and its address on
// the balancer's network.
type Wanted struct {
	VM string
	IP string
}

// Change is one member transition, for events.
type Change struct {
	VM, IP string
	Kind   string // added, draining, removed, readded
	Reason string
}

// Reconcile returns the members a balancer should serve now: wanted VMs
// are active (added, or brought back from draining); members no longer
// wanted drain — their host keeps their established connections but
// sends them nothing new — and leave once the host reports them
// draining with no connection left, or at the drain timeout. obs is
// the host's last report (nil: none).
func Reconcile(now time.Time, cur []model.LBMember, want []Wanted, obs *model.LBObserved, drainTimeout time.Duration) ([]model.LBMember, []Change) {
	w := make(map[string]Wanted, len(want))
	for _, x := range want {
		w[x.VM] = x
	}
	var out []model.LBMember
	var ch []Change
	seen := map[string]bool{}
	for _, m := range cur {
		seen[m.VM] = true
		x, wanted := w[m.VM]
		switch {
		case wanted:
			if m.State == model.MemberDraining {
				ch = append(ch, Change{VM: m.VM, IP: x.IP, Kind: "readded", Reason: "wanted again while draining"})
			}
			out = append(out, model.LBMember{VM: m.VM, IP: x.IP, State: model.MemberActive})
		case m.State != model.MemberDraining:
			t := now
			out = append(out, model.LBMember{VM: m.VM, IP: m.IP, State: model.MemberDraining, DrainSince: &t})
			ch = append(ch, Change{VM: m.VM, IP: m.IP, Kind: "draining", Reason: "no longer a member: no new connections"})
		default:
			if why, done := drained(now, m, obs, drainTimeout); done {
				ch = append(ch, Change{VM: m.VM, IP: m.IP, Kind: "removed", Reason: why})
				continue
			}
			out = append(out, m)
		}
	}
	for _, x := range want {
		if !seen[x.VM] {
			out = append(out, model.LBMember{VM: x.VM, IP: x.IP, State: model.MemberActive})
			ch = append(ch, Change{VM: x.VM, IP: x.IP, Kind: "added", Reason: "running"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VM < out[j].VM })
	return out, ch
}

// drained reports whether a draining member may leave, and why.
func drained(now time.Time, m model.LBMember, obs *model.LBObserved, timeout time.Duration) (string, bool) {
	if m.DrainSince == nil {
		return "drained", true
	}
	if obs != nil && obs.At.After(*m.DrainSince) {
		h, ok := obs.Members[m.VM]
		if !ok || !obs.Running {
			return "its host no longer serves it", true
		}
		if h.Draining && h.Sessions == 0 {
			return "drained: no connection left", true
		}
	}
	if since := now.Sub(*m.DrainSince); since >= timeout {
		n := -1
		if obs != nil {
			n = obs.Members[m.VM].Sessions
		}
		if n >= 0 {
			return fmt.Sprintf("drain timeout (%s) with %d connection(s) left", timeout, n), true
		}
		return fmt.Sprintf("drain timeout (%s)", timeout), true
	}
	return "", false
}

// Serving reports whether vm is among a balancer's members in any state
// (a group's member leaves its balancers before it is deleted).
func Serving(ms []model.LBMember, vm string) bool {
	for _, m := range ms {
		if m.VM == vm {
			return true
		}
	}
	return false
}

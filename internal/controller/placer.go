package controller

import (
	"fmt"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/scheduler"
)

// Snapshot is what a Placer decides from: the hosts (sorted by name), their
// current allocations keyed by host name (a missing entry means nothing is
// allocated) and the cluster policy. A Placer must treat it as read-only.
//
// The controller takes one Snapshot per pass and keeps it current with its
// own commits: it replaces Allocs[h] and appends h to Changed. A Placer
// that derives costly state (indexes) may cache it per Epoch and apply
// only the hosts in Changed that it has not seen yet.
type Snapshot struct {
	Hosts  []model.Host
	Allocs map[string]model.Allocation
	Policy model.Policy
	// PolicyRev is the store revision Policy was read at (0: none stored,
	// the defaults apply). Placements commit only while it is unchanged:
	// the cache's watches are independent, so a VM can arrive before a
	// policy change written earlier.
	PolicyRev int64
	Now       time.Time
	// Epoch identifies this snapshot; a new pass takes a new epoch.
	Epoch uint64
	// Changed lists, in order, hosts whose Allocs entry changed after the
	// snapshot was taken (a host may appear several times).
	Changed []string
}

// setAlloc replaces a host's allocation and records the change.
func (s *Snapshot) setAlloc(a model.Allocation) {
	s.Allocs[a.Host] = a
	s.Changed = append(s.Changed, a.Host)
}

// Placer chooses a host for one VM. It returns the chosen host's name, or
// "" when the VM fits nowhere; the explanation says why in both cases.
// Implementations are pure: no store, no clock (use Snapshot.Now).
type Placer interface {
	Place(s *Snapshot, vm *model.VM) (host string, expl *model.Explanation)
}

// PlacerFunc adapts a function to the Placer interface.
type PlacerFunc func(s *Snapshot, vm *model.VM) (string, *model.Explanation)

// Place implements Placer.
func (f PlacerFunc) Place(s *Snapshot, vm *model.VM) (string, *model.Explanation) { return f(s, vm) }

// FirstFit is a minimal Placer for tests and as a fallback: the first
// ready host (by name) whose capacity × ratio covers the VM's demand,
// whose physical capacity covers its reservations, that carries its
// required labels and matches its pinned host. It honours no affinity,
// isolation or storage constraint.
type FirstFit struct{}

var _ Placer = FirstFit{}

// Place implements Placer.
func (FirstFit) Place(s *Snapshot, vm *model.VM) (string, *model.Explanation) {
	expl := &model.Explanation{Time: s.Now, Hosts: len(s.Hosts)}
	var rj rejects
	for i := range s.Hosts {
		h := &s.Hosts[i]
		switch {
		case h.State != model.HostReady || h.Cordoned:
			rj.add("host-state", "host not ready or cordoned")
		case vm.Spec.Placement.Host != "" && vm.Spec.Placement.Host != h.Name:
			rj.add("pinned-host", "VM is pinned to host "+vm.Spec.Placement.Host)
		case !hasLabels(h.Labels, vm.Spec.Placement.RequiredLabels):
			rj.add("labels", "missing required labels "+formatLabels(vm.Spec.Placement.RequiredLabels))
		default:
			if why := Fits(h, s.Allocs[h.Name], s.Policy, &vm.Spec); why != "" {
				rj.add("fit", why)
				continue
			}
			expl.Filters = rj.out
			expl.Chosen = h.Name
			expl.Candidates = []model.Candidate{{Host: h.Name, Score: 1}}
			expl.Summary = "placed on " + h.Name + " (first fit)"
			return h.Name, expl
		}
	}
	expl.Filters = rj.out
	expl.Summary = unschedulableSummary(len(s.Hosts), expl.Filters)
	return "", expl
}

// rejects counts rejected hosts per filter and kind of reason (the text
// before any parenthesis), keeping the first full reason of each kind.
type rejects struct {
	out []model.FilterOut
	idx map[string]int
}

func (r *rejects) add(filter, reason string) {
	kind, _, _ := strings.Cut(reason, " (")
	k := filter + "\x00" + kind
	if i, ok := r.idx[k]; ok {
		r.out[i].Rejected++
		return
	}
	if r.idx == nil {
		r.idx = map[string]int{}
	}
	r.idx[k] = len(r.out)
	r.out = append(r.out, model.FilterOut{Filter: filter, Rejected: 1, Reason: reason})
}

func unschedulableSummary(hosts int, filters []model.FilterOut) string {
	if hosts == 0 {
		return "no hosts in the pool"
	}
	parts := make([]string, 0, len(filters))
	for _, f := range filters {
		parts = append(parts, fmt.Sprintf("%d hosts: %s", f.Rejected, f.Reason))
	}
	return fmt.Sprintf("fits none of %d hosts: %s", hosts, strings.Join(parts, "; "))
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func formatLabels(m map[string]string) string {
	keys := sortedKeys(m)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

// EffectiveRatios resolves a host's allocation ratios: the host's override,
// else the policy's, else the model defaults (scheduler.EffectiveRatios).
func EffectiveRatios(h *model.Host, p model.Policy) model.Ratios {
	return scheduler.EffectiveRatios(h, p)
}

// Limit is what may be allocated on a host: capacity × ratio
// (scheduler.Allocatable).
func Limit(h *model.Host, p model.Policy) model.Resources { return scheduler.Allocatable(h, p) }

// Fits says why a VM with spec does not fit on h given its allocation a,
// or "" when it does: the scheduler's fit rule (scheduler.Fits), so that
// capacity is written in one place. A nil spec checks a alone. Commits do
// not rely on it: they go through the gate, which runs every filter.
func Fits(h *model.Host, a model.Allocation, p model.Policy, spec *model.VMSpec) string {
	return scheduler.Fits(h, a, p, spec)
}

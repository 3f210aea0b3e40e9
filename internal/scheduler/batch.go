package scheduler

import (
	"fmt"

	"github.com/vpool/vpool/internal/model"
)

// PlaceBatch places VMs in order, assuming each placement into snap so the
// next one sees it. The members of a hard affinity or hard anti-affinity
// group in the batch are placed together, at the position of the first,
// all or nothing: if one does not fit, none is placed and each says why.
// A hard-affinity group new to the cluster sizes its first host for all
// of its members. To decide without changing snap, pass snap.Clone().
func (s *Scheduler) PlaceBatch(snap *Snapshot, reqs []Request) []Decision {
	out := make([]Decision, len(reqs))
	gangs := map[string][]int{}
	for i, r := range reqs {
		if k := gangKey(r); k != "" {
			gangs[k] = append(gangs[k], i)
		}
	}
	done := make([]bool, len(reqs))
	for i, r := range reqs {
		if done[i] {
			continue
		}
		if g := gangs[gangKey(r)]; len(g) > 1 {
			s.placeGang(snap, reqs, g, out)
			for _, j := range g {
				done[j] = true
			}
			continue
		}
		out[i] = s.Place(snap, r)
		s.assume(snap, &out[i])
	}
	return out
}

func gangKey(r Request) string {
	if r.Spec == nil {
		return ""
	}
	p := &r.Spec.Placement
	if p.AffinityGroup == "" || (p.Affinity != model.AffinityHard && p.Affinity != model.AntiAffinityHard) {
		return ""
	}
	return projectOf(r.Key) + "/" + p.AffinityGroup
}

func (s *Scheduler) assume(snap *Snapshot, d *Decision) {
	if !d.Placed() {
		return
	}
	if err := snap.Assume(*d); err != nil {
		d.Err, d.Host = err, ""
	}
}

// placeGang places the members idx of one group all or nothing.
func (s *Scheduler) placeGang(snap *Snapshot, reqs []Request, idx []int, out []Decision) {
	var extra *demand
	if reqs[idx[0]].Spec.Placement.Affinity == model.AffinityHard {
		extra = &demand{}
		for _, j := range idx[1:] {
			if d, err := snap.demandOf(reqs[j].Key, reqs[j].Spec); err == nil {
				extra.cpu += d.cpu
				extra.mem += d.mem
				extra.disk += d.disk
				extra.cpuRes += d.cpuRes
				extra.memRes += d.memRes
			}
		}
	}
	failed := -1
	for n, j := range idx {
		if n == 0 {
			out[j] = s.place(snap, reqs[j], extra)
		} else {
			out[j] = s.Place(snap, reqs[j])
		}
		s.assume(snap, &out[j])
		if !out[j].Placed() {
			failed = j
			break
		}
	}
	if failed < 0 {
		return
	}
	group := gangKey(reqs[failed])
	why := "does not fit"
	if e := out[failed].Explanation; e != nil {
		why = e.Summary
	}
	if out[failed].Err != nil {
		why = out[failed].Err.Error()
	}
	for _, j := range idx {
		if out[j].Placed() {
			_ = snap.Forget(out[j].Key) // assumed just above: cannot fail
		}
		d := &out[j]
		d.Key, d.Spec, d.Host, d.host = reqs[j].Key, reqs[j].Spec, "", -1
		if d.Explanation == nil {
			d.Explanation = &model.Explanation{Hosts: snap.Len()}
		}
		d.Explanation.Chosen = ""
		if j == failed {
			d.Explanation.Summary = fmt.Sprintf("group %s placed all or nothing: %s", group, why)
		} else {
			d.Explanation.Summary = fmt.Sprintf("group %s placed all or nothing: member %s: %s", group, reqs[failed].Key, why)
		}
	}
}

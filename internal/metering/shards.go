package metering

import (
	"fmt"
	"hash/fnv"
	"sort"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Rollups are stored in shards: the rollups of up to PerShard VMs of one
// project in one month are one value (model.UsageRollupShard), written
// whole. At rest every running VM's rollup changes every sample; writing
// a shard once per persist interval instead of each VM's rollup makes
// the keys written a minute grow with VMs ÷ PerShard, not with VMs
// (docs/scale.md, "Fifth round"). A VM joins the first shard of its
// project's month with room and stays there for the month: a shard's
// members only grow, so its VMs never move between values and a write
// cut short leaves no VM in two shards or none.

// DefaultPerShard bounds a shard's VMs: a rollup with a figure for every
// day of a month is under 4.5 KiB even with the longest names and
// figures (TestShardBytesBounded), so a shard stays under 300 KiB, one
// transaction's worth (etcd takes requests up to 1.5 MiB).
const DefaultPerShard = 64

type shardID struct {
	month, project string
	n              int
}

func (id shardID) String() string { return fmt.Sprintf("%s/%s/~%d", id.month, id.project, id.n) }

// projectShards are the shards of one project's month.
type projectShards struct {
	month, project string
	members        [][]string // rollup keys by shard
	open           int        // the first shard that may have room
}

// assign puts a rollup new to the meter in the first shard of its
// project's month with room.
func (m *Meter) assign(k, month, project string) {
	ps := m.projectShards(month, project)
	per := max(m.PerShard, 1)
	for ps.open < len(ps.members) && len(ps.members[ps.open]) >= per {
		ps.open++
	}
	m.join(k, shardID{month: month, project: project, n: ps.open})
}

// join puts k in shard id.
func (m *Meter) join(k string, id shardID) {
	ps := m.projectShards(id.month, id.project)
	for len(ps.members) <= id.n {
		ps.members = append(ps.members, nil)
	}
	ps.members[id.n] = append(ps.members[id.n], k)
	m.shardOf[k] = id
}

func (m *Meter) projectShards(month, project string) *projectShards {
	mp := month + "/" + project
	ps := m.shards[mp]
	if ps == nil {
		ps = &projectShards{month: month, project: project}
		m.shards[mp] = ps
	}
	return ps
}

// waiting says whether a rollup of ps waits to be written.
func (m *Meter) waiting(ps *projectShards) bool {
	for _, members := range ps.members {
		for _, k := range members {
			if m.dirty[k] || m.legacy[k] {
				return true
			}
		}
	}
	return false
}

// ShardWrite is one shard to store whole.
type ShardWrite struct {
	Shard model.UsageRollupShard // every VM of the shard, in name order
	// Legacy names the VMs of the shard whose rollups an older leader
	// stored one a VM: the write deletes those records.
	Legacy []string
}

// Due returns the shards to write at now: those holding a rollup
// changed since written that a new leader could not book again from the
// store (new, deleted, another shape, host or counter, a capped gap), or
// was never written, or is of a past month, or holding a rollup stored
// one a VM (moved into the shard); and the others with a changed rollup
// once per every (each at its own phase of it, so that a steady fleet's
// writes spread evenly). every <= 0: every shard holding a changed
// rollup.
func (m *Meter) Due(now time.Time, every time.Duration) []ShardWrite {
	month := Month(now)
	candidates := map[shardID]bool{}
	for k := range m.dirty {
		if id, ok := m.shardOf[k]; ok && m.rollups[k] != nil {
			w, written := m.written[k]
			candidates[id] = candidates[id] || every <= 0 || m.urgent[k] || !written || w.IsZero() || m.rollups[k].Month < month
		}
	}
	for k := range m.legacy {
		if id, ok := m.shardOf[k]; ok {
			candidates[id] = true
		}
	}
	ids := make([]shardID, 0, len(candidates))
	for id, urgent := range candidates {
		if urgent || m.phaseDue(id, now, every) {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	out := make([]ShardWrite, 0, len(ids))
	for _, id := range ids {
		out = append(out, m.shardWrite(id))
	}
	return out
}

// phaseDue says whether shard id's period of every turned since it was
// last written.
func (m *Meter) phaseDue(id shardID, now time.Time, every time.Duration) bool {
	w, ok := m.shardAt[id]
	if !ok || every <= 0 {
		return true
	}
	f := fnv.New64a()
	_, _ = f.Write([]byte(id.String()))
	off := int64(f.Sum64() % uint64(every))
	return (now.UnixNano()+off)/int64(every) != (w.UnixNano()+off)/int64(every)
}

// shardWrite copies shard id's rollups.
func (m *Meter) shardWrite(id shardID) ShardWrite {
	members := m.shards[id.month+"/"+id.project].members[id.n]
	w := ShardWrite{Shard: model.UsageRollupShard{Month: id.month, Project: id.project, Shard: id.n,
		Rollups: make([]model.UsageRollup, 0, len(members))}}
	for _, k := range members {
		r := m.rollups[k]
		if r == nil {
			continue
		}
		c := *r
		c.Days = append([]model.UsageDay(nil), r.Days...)
		w.Shard.Rollups = append(w.Shard.Rollups, c)
		if m.legacy[k] {
			w.Legacy = append(w.Legacy, r.VM)
		}
	}
	sort.Slice(w.Shard.Rollups, func(i, j int) bool { return w.Shard.Rollups[i].VM < w.Shard.Rollups[j].VM })
	sort.Strings(w.Legacy)
	return w
}

// Clean marks w written at.
func (m *Meter) Clean(w ShardWrite, at time.Time) {
	for _, r := range w.Shard.Rollups {
		k := rollupKey(r.Month, r.Project, r.VM)
		delete(m.dirty, k)
		delete(m.urgent, k)
		delete(m.legacy, k)
		m.written[k] = at
	}
	m.shardAt[shardID{month: w.Shard.Month, project: w.Shard.Project, n: w.Shard.Shard}] = at
}

// Pack puts a project's month of rollups (compacted: no longer booked)
// into shards of per VMs, in name order.
func Pack(month, project string, rs []model.UsageRollup, per int) []model.UsageRollupShard {
	rs = append([]model.UsageRollup(nil), rs...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].VM < rs[j].VM })
	per = max(per, 1)
	var out []model.UsageRollupShard
	for i := 0; i < len(rs); i += per {
		out = append(out, model.UsageRollupShard{Month: month, Project: project, Shard: len(out), Rollups: rs[i:min(i+per, len(rs))]})
	}
	return out
}

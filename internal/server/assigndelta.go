package server

import (
	"reflect"
	"slices"
	"strings"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Assignment deltas (docs/scale.md, fifth round): an agent that polls
// with delta=true is answered the VMs of its host changed after its
// revision and the keys of those that left the host since, instead of
// every VM of the host at every wake; and its own status reports do not
// wake it (reportOnly). The view remembers, per host, the VMs that left
// it and when (leftHosts), a bounded number of them: a poll from before
// what it remembers, or from before the view's last re-list, is answered
// in full.

// maxLeft bounds the VMs remembered per host; past it the older half is
// forgotten and polls from before them are answered in full.
const maxLeft = 256

// leftHosts is, per host, the VMs that left it (key → revision) and the
// revision before which it forgot some (floor); listed is the revision
// of the view's last re-list (nothing before it is known). Cache lock.
type leftHosts struct {
	m      map[string]*leftVMs
	listed int64
}

type leftVMs struct {
	keys  map[string]int64
	floor int64
}

// add notes that key left host at rev.
func (l *leftHosts) add(host, key string, rev int64) {
	if l.m == nil {
		l.m = map[string]*leftVMs{}
	}
	h := l.m[host]
	if h == nil {
		h = &leftVMs{keys: map[string]int64{}}
		l.m[host] = h
	}
	h.keys[key] = rev
	if len(h.keys) <= maxLeft {
		return
	}
	revs := make([]int64, 0, len(h.keys))
	for _, r := range h.keys {
		revs = append(revs, r)
	}
	slices.Sort(revs)
	cut := revs[len(revs)/2]
	for k, r := range h.keys {
		if r <= cut {
			delete(h.keys, k)
		}
	}
	h.floor = max(h.floor, cut)
}

// back notes that key is on host again.
func (l *leftHosts) back(host, key string) {
	if h := l.m[host]; h != nil {
		delete(h.keys, key)
	}
}

// reset forgets everything: the view re-listed at rev.
func (l *leftHosts) reset(rev int64) {
	l.m, l.listed = nil, rev
}

// since is the first revision a delta of host may start from: the
// re-list's, or a later one whose leavers the view forgot.
func (l *leftHosts) since(host string) int64 {
	s := l.listed
	if h := l.m[host]; h != nil {
		s = max(s, h.floor)
	}
	return s
}

// after returns the VMs ("project/name") that left host after rev, in
// key order.
func (l *leftHosts) after(host string, rev int64) []string {
	h := l.m[host]
	if h == nil {
		return nil
	}
	var out []string
	for k, r := range h.keys {
		if r > rev {
			out = append(out, strings.TrimPrefix(k, store.VMsPrefix))
		}
	}
	slices.Sort(out)
	return out
}

// reportOnly says whether cur differs from old only by what a status
// report of its host writes (reportChange: phase, error, message, usage,
// restart nonce applied, observation and start times, disks, watchdog),
// and is one (its observation time moved: only reports move it):
// nothing the host's agent acts on — it holds the stored VM from the
// report's answer. The placement explanation, which no agent reads and
// no report changes, is not compared (most of the cost of comparing).
func reportOnly(old, cur *model.VM) bool {
	if old == nil || cur == nil || cur.Status.ObservedAt.Equal(old.Status.ObservedAt) {
		return false
	}
	c := *cur
	c.Revision, c.UpdatedAt = old.Revision, old.UpdatedAt
	s, o := &c.Status, &old.Status
	s.Phase, s.LastError, s.Message, s.Usage = o.Phase, o.LastError, o.Message, o.Usage
	s.AppliedRestartNonce, s.ObservedAt, s.StartedAt = o.AppliedRestartNonce, o.ObservedAt, o.StartedAt
	s.Disks, s.Watchdog, s.Explanation = o.Disks, o.Watchdog, o.Explanation
	return reflect.DeepEqual(&c, old)
}

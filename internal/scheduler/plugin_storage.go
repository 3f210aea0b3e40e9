package scheduler

import (
	"fmt"
	"strings"

	"github.com/vpool/vpool/internal/model"
)

// Storage checks that the pool and tier each disk asks for exist on the
// host, with room when the host reports the pool's free space. Disks that
// name neither pool nor tier go to the host's default storage, which Fit
// counts as disk.
type Storage struct{}

var _ Filter = (*Storage)(nil)

const (
	reasonNoPool uint8 = iota
	reasonPoolFull
)

// Name implements Plugin.
func (Storage) Name() string { return "storage" }

// Filter implements Filter.
func (Storage) Filter(c *Cycle, h int) Status {
	if len(c.d.storage) == 0 {
		return ok
	}
	_, st := choosePools(c.snap.pools[h], c.d.storage, nil)
	return st
}

// choosePools picks a pool slot for each storage need (first match with
// room), appending slots to out. Free space of -1 is "not reported".
func choosePools(pools []poolRec, needs []storageNeed, out []int) ([]int, Status) {
	var charged [8]int64
	for _, n := range needs {
		found, best, most := false, -1, int64(-1)
		for i, p := range pools {
			if (n.pool != anyID && p.name != n.pool) || (n.tier != anyID && p.tier != n.tier) {
				continue
			}
			found = true
			free := p.free
			if free < 0 {
				best = i
				break
			}
			if i < len(charged) {
				free -= charged[i]
			}
			most = max(most, free)
			if free >= n.size {
				best = i
				break
			}
		}
		switch {
		case !found:
			return out, reject(reasonNoPool, 0)
		case best < 0:
			return out, reject(reasonPoolFull, most)
		}
		if best < len(charged) {
			charged[best] += n.size
		}
		out = append(out, best)
	}
	return out, ok
}

// Explain implements Filter.
func (Storage) Explain(c *Cycle, reason uint8, most int64) string {
	var want []string
	var size int64
	for _, n := range c.d.storage {
		size += n.size
		switch {
		case n.poolName != "" && n.tierName != "":
			want = append(want, fmt.Sprintf("pool %q (tier %q)", n.poolName, n.tierName))
		case n.poolName != "":
			want = append(want, fmt.Sprintf("pool %q", n.poolName))
		default:
			want = append(want, fmt.Sprintf("tier %q", n.tierName))
		}
	}
	if reason == reasonNoPool {
		return "no storage " + strings.Join(want, ", ")
	}
	return fmt.Sprintf("not enough room in %s (needs %s, most free %s)", strings.Join(want, ", "), model.Bytes(size), model.Bytes(max(most, 0)))
}

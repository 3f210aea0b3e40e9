package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// UsageView answers measured usage. Heartbeats no longer write it into
// host and VM records: the API servers keep it in memory and write it
// as sampled records (internal/server, usage.go; docs/scale.md), and
// the server this manager runs in answers from both. A host's seen time
// is the last renewal of its liveness lease that any server reported,
// and its lease expires leaseTTL seconds after it unless renewed since:
// what a host-HA controller reads besides the alive key.
//
// Without a UsageView (tests, the simulator) the controllers read the
// usage stored in the records.
type UsageView interface {
	HostUsage(host string) (u model.HostUsage, seen time.Time, leaseTTL int, ok bool)
	VMUsage(key string) (u model.VMUsage, at time.Time, ok bool)
}

// VMUsageBatch is what a UsageView may answer besides: the usage of
// several VMs at once, each with when it was reported (us[i], at[i] for
// keys[i]; at[i] zero when nothing is known), as VMUsage answers them one
// by one. The energy pass asks for every running VM's usage each pass
// (100,000 at 10,000 hosts); the server answers a host's VMs under one
// take of each of its locks instead of two a VM.
type VMUsageBatch interface {
	VMUsages(keys []string, us []model.VMUsage, at []time.Time)
}

// withUsage overlays a copy of a host record with its measured usage and
// last heartbeat.
func withUsage(v UsageView, h *model.Host) {
	if v == nil {
		return
	}
	if u, seen, _, ok := v.HostUsage(h.Name); ok {
		h.Usage = u
		if seen.After(h.LastSeen) {
			h.LastSeen = seen
		}
	}
}

// vmUsage is a VM's measured usage: the view's when fresher than the
// record's.
func (r *reconciler) vmUsage(vm *model.VM) model.VMUsage {
	return r.vmUsageOf(vm, vm.Key())
}

// vmUsageOf is vmUsage for a caller that has the VM's key already.
func (r *reconciler) vmUsageOf(vm *model.VM, key string) model.VMUsage {
	if v := r.m.cfg.Usage; v != nil {
		if u, at, ok := v.VMUsage(key); ok && at.After(vm.Status.ObservedAt) {
			return u
		}
	}
	return vm.Status.Usage
}

// vmUsagesOf fills us with the usage of each of vms (as vmUsageOf),
// asking v for all of them at once when it answers batches.
func (r *reconciler) vmUsagesOf(vms []runningVM, us []model.VMUsage) []model.VMUsage {
	us = us[:0]
	b, ok := r.m.cfg.Usage.(VMUsageBatch)
	if !ok {
		for _, rv := range vms {
			us = append(us, r.vmUsageOf(rv.vm, rv.key))
		}
		return us
	}
	g := r.nrg
	g.keys, g.at = g.keys[:0], g.at[:0]
	for _, rv := range vms {
		g.keys, g.at, us = append(g.keys, rv.key), append(g.at, time.Time{}), append(us, model.VMUsage{})
	}
	b.VMUsages(g.keys, us, g.at)
	for i, rv := range vms {
		// as vmUsageOf: the measured usage when newer than the record's
		// (nothing known: at is zero, never after it)
		if !g.at[i].After(rv.vm.Status.ObservedAt) {
			us[i] = rv.vm.Status.Usage
		}
	}
	clear(g.keys) // keep no key alive past the pass
	return us
}

// SampleRetention is how long the usage samples of a server that stopped
// writing them are kept (its hosts have moved to other servers by then).
const SampleRetention = 15 * time.Minute

// pruneSamples deletes usage samples older than SampleRetention.
func (r *reconciler) pruneSamples(ctx context.Context, now time.Time) error {
	kvs, _, err := r.repo.Store().List(ctx, store.SamplesPrefix)
	if err != nil {
		return fmt.Errorf("controller: list usage samples: %w", err)
	}
	var ops []store.Op
	for _, kv := range kvs {
		var s struct {
			At time.Time `json:"at"`
		}
		if json.Unmarshal(kv.Value, &s) != nil || now.Sub(s.At) > SampleRetention {
			ops = append(ops, store.Delete(kv.Key))
		}
	}
	for len(ops) > 0 {
		n := min(len(ops), eventDeleteBatch)
		if _, _, err := r.repo.Txn(ctx, nil, ops[:n]); err != nil {
			return fmt.Errorf("controller: prune usage samples: %w", err)
		}
		ops = ops[n:]
	}
	return nil
}

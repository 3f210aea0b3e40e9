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

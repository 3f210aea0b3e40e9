package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// eventDeleteBatch keeps compaction transactions under etcd's limit of
// 128 operations.
const eventDeleteBatch = 100

// cleanup finishes the deletion of VMs whose host will not do it: VMs
// with no host, on a host that no longer exists, or on a host down for
// longer than DeleteGrace. (A live host's agent finishes its own VMs.)
func (r *reconciler) cleanup(ctx context.Context) error {
	doomed := r.c.vmList(func(vm *model.VM) bool { return vm.DeletedAt != nil })
	if len(doomed) == 0 {
		return nil
	}
	hosts, _ := r.c.hostView()
	byName := make(map[string]*model.Host, len(hosts))
	for i := range hosts {
		byName[hosts[i].Name] = &hosts[i]
	}
	now := r.now()
	var errs []error
	for _, vm := range doomed {
		why := ""
		h := byName[vm.Status.Host]
		switch {
		case vm.Status.Host == "":
			why = "no host"
		case h == nil:
			why = "host gone"
		case h.State == model.HostDown && now.Sub(h.UpdatedAt) >= r.m.cfg.DeleteGrace:
			why = "host down"
		default:
			continue
		}
		if err := r.m.repo.FinishDeleteVM(ctx, vm.Project, vm.Name); err != nil {
			errs = append(errs, fmt.Errorf("controller: finish deleting %s: %w", vm.Key(), err))
			continue
		}
		r.m.log.Info("finished deleting VM", "vm", vm.Key(), "reason", why)
	}
	return errors.Join(errs...)
}

// compactEvents keeps the event log bounded: every CompactInterval it
// deletes events older than MaxEventAge and all but the newest MaxEvents.
// Event keys sort by time, so no event is decoded.
func (r *reconciler) compactEvents(ctx context.Context) error {
	now := r.now()
	if !r.lastCompact.IsZero() && now.Sub(r.lastCompact) < r.m.cfg.CompactInterval {
		return nil
	}
	kvs, _, err := r.st.List(ctx, store.EventsPrefix)
	if err != nil {
		return fmt.Errorf("controller: list events: %w", err)
	}
	cut := strings.TrimSuffix(store.EventKey(now.Add(-r.m.cfg.MaxEventAge).UnixNano(), ""), "-")
	excess := len(kvs) - r.m.cfg.MaxEvents
	var ops []store.Op
	for i, kv := range kvs {
		if i >= excess && kv.Key >= cut {
			break
		}
		ops = append(ops, store.Delete(kv.Key))
	}
	for len(ops) > 0 {
		n := min(len(ops), eventDeleteBatch)
		if _, _, err := r.st.Txn(ctx, r.t.guard(), ops[:n]); err != nil {
			return fmt.Errorf("controller: compact events: %w", err)
		}
		ops = ops[n:]
	}
	r.lastCompact = now
	return nil
}

package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

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
	doomed := r.c.deletingList()
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
		case h.State == model.HostFenced:
			why = "host fenced" // it runs nothing any more
		case h.State == model.HostDown && now.Sub(h.UpdatedAt) >= r.m.cfg.DeleteGrace:
			why = "host down"
		default:
			continue
		}
		if err := r.repo.FinishDeleteVM(ctx, vm.Project, vm.Name); err != nil {
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
	kvs, _, err := r.repo.Store().List(ctx, store.EventsPrefix)
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
		if _, _, err := r.repo.Txn(ctx, nil, ops[:n]); err != nil {
			return fmt.Errorf("controller: compact events: %w", err)
		}
		ops = ops[n:]
	}
	if err := r.pruneMigrations(ctx, now); err != nil {
		return err
	}
	if err := r.pruneSamples(ctx, now); err != nil {
		return err
	}
	if err := r.tidyExplanations(ctx, now); err != nil {
		return err
	}
	r.lastCompact = now
	return nil
}

// pruneMigrations deletes finished migrations finished before
// MigrationRetention, and all but the newest MaxMigrations finished ones,
// so that the migration controller's passes stay short. A migration whose
// leftover clean-up the host has not confirmed yet is kept: the agent
// still needs it — unless that host was deleted, which will never
// confirm anything.
func (r *reconciler) pruneMigrations(ctx context.Context, now time.Time) error {
	migs, _, err := r.repo.ListMigrations(ctx, "")
	if err != nil {
		return fmt.Errorf("controller: list migrations: %w", err)
	}
	hosts, _, err := r.repo.ListHosts(ctx)
	if err != nil {
		return fmt.Errorf("controller: list hosts: %w", err)
	}
	known := make(map[string]bool, len(hosts))
	for _, h := range hosts {
		known[h.Name] = true
	}
	var done []*model.Migration
	for _, m := range migs {
		cleaned, confirmer := m.TargetCleaned, m.Target
		if m.Phase == model.MigrationCompleted {
			cleaned, confirmer = m.SourceCleaned, m.Source
		}
		if m.Phase.Final() && m.FinishedAt != nil && (cleaned || !known[confirmer]) {
			done = append(done, m)
		}
	}
	sort.Slice(done, func(i, j int) bool { return done[i].FinishedAt.Before(*done[j].FinishedAt) })
	excess := len(done) - r.m.cfg.MaxMigrations
	var ops []store.Op
	for i, m := range done {
		if i >= excess && now.Sub(*m.FinishedAt) < r.m.cfg.MigrationRetention {
			break
		}
		ops = append(ops, store.Delete(store.MigrationKey(m.Name)))
	}
	for len(ops) > 0 {
		n := min(len(ops), eventDeleteBatch)
		if _, _, err := r.repo.Txn(ctx, nil, ops[:n]); err != nil {
			return fmt.Errorf("controller: prune migrations: %w", err)
		}
		ops = ops[n:]
	}
	return nil
}

package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Event kinds written by this package.
const (
	EventVMCreated  = "vm.created"
	EventVMPhase    = "vm.phase"
	EventVMDeleted  = "vm.deleted"
	EventVMUpdated  = "vm.updated"
	EventHostJoined = "host.joined"
	EventHostUp     = "host.up"
	EventHostDown   = "host.down"
	EventHostState  = "host." // + state for other states
	EventHostGone   = "host.deleted"
)

// EventOp returns the put that stores e. e.Time orders the key (a zero
// Time is replaced by time.Now); e.ID is ignored: an event's ID is the
// revision it is written at.
func EventOp(e model.Event) store.Op {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.ID = 0
	return store.Put(store.EventKey(e.Time.UnixNano(), shortID()), encode(e))
}

// VMObject is the Event.Object of a VM.
func VMObject(project, name string) string { return "vm/" + project + "/" + name }

// HostObject is the Event.Object of a host.
func HostObject(name string) string { return "host/" + name }

// TransitionOps returns the event ops that record the change from old to
// new: vm.created when old is nil; else vm.phase when the phase differs,
// and an event for every other change worth telling (changeOps).
func TransitionOps(old, new *model.VM, now time.Time) []store.Op {
	obj := VMObject(new.Project, new.Name)
	if old == nil {
		return []store.Op{EventOp(model.Event{Time: now, Kind: EventVMCreated, Object: obj, Project: new.Project,
			To: string(new.Status.Phase), Message: fmt.Sprintf("VM %s created (%d vCPUs, %s memory)", new.Name, new.Spec.VCPUs, new.Spec.Memory)})}
	}
	ops := changeOps(old, new, now)
	if old.Status.Phase == new.Status.Phase {
		return ops
	}
	msg := fmt.Sprintf("VM %s: %s → %s", new.Name, old.Status.Phase, new.Status.Phase)
	if new.Status.Host != "" {
		msg += " on " + new.Status.Host
	}
	if new.Status.Phase == model.PhaseFailed && new.Status.LastError != "" {
		msg += ": " + new.Status.LastError
	}
	return append(ops, EventOp(model.Event{Time: now, Kind: EventVMPhase, Object: obj, Project: new.Project,
		From: string(old.Status.Phase), To: string(new.Status.Phase), Message: msg}))
}

// hostTransitionOps records a host's creation or state change.
func hostTransitionOps(old, new *model.Host, now time.Time) []store.Op {
	obj := HostObject(new.Name)
	if old == nil {
		return []store.Op{EventOp(model.Event{Time: now, Kind: EventHostJoined, Object: obj, To: string(new.State),
			Message: fmt.Sprintf("host %s joined (%d CPUs, %s memory)", new.Name, new.Capacity.CPUs, new.Capacity.Memory)})}
	}
	if old.State == new.State {
		return nil
	}
	kind := EventHostState + string(new.State)
	switch new.State {
	case model.HostReady:
		kind = EventHostUp
	case model.HostDown:
		kind = EventHostDown
	}
	return []store.Op{EventOp(model.Event{Time: now, Kind: kind, Object: obj, From: string(old.State), To: string(new.State),
		Message: fmt.Sprintf("host %s: %s → %s", new.Name, old.State, new.State)})}
}

func decodeEvent(kv store.KV) (model.Event, error) {
	var e model.Event
	if err := decode(kv, &e); err != nil {
		return e, err
	}
	e.ID = kv.ModRev
	return e, nil
}

func eventVisible(e model.Event, project string) bool {
	return project == "" || e.Project == project
}

// AppendEvent writes one event on its own.
func (r *Repo) AppendEvent(ctx context.Context, e model.Event) error {
	if e.Time.IsZero() {
		e.Time = r.now()
	}
	_, _, err := r.txn(ctx, nil, []store.Op{EventOp(e)})
	return err
}

// ListEvents returns the events written after revision since (0: all),
// of one project ("" = all projects and cluster events), oldest first, and
// the store revision of the listing (the next follow starts after it).
func (r *Repo) ListEvents(ctx context.Context, since int64, project string) ([]model.Event, int64, error) {
	kvs, rev, err := r.st.List(ctx, store.EventsPrefix)
	if err != nil {
		return nil, 0, fmt.Errorf("state: list events: %w", err)
	}
	out := make([]model.Event, 0, len(kvs))
	for _, kv := range kvs {
		if kv.ModRev <= since {
			continue
		}
		e, err := decodeEvent(kv)
		if err != nil {
			return nil, 0, err
		}
		if eventVisible(e, project) {
			out = append(out, e)
		}
	}
	// Keys sort by writer time; sort by revision so that clock skew
	// between servers never reorders a stream.
	sortEvents(out)
	return out, rev, nil
}

func sortEvents(es []model.Event) {
	// insertion sort: the list is already almost in order
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && es[j].ID < es[j-1].ID; j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
}

// FollowEvents calls fn for every event after revision since (those
// stored, then new ones as they are written) until ctx ends (nil) or fn or
// the watch fails. project filters as in ListEvents.
func (r *Repo) FollowEvents(ctx context.Context, since int64, project string, fn func(model.Event) error) error {
	return r.FollowEventBatches(ctx, since, project, fn, nil)
}

// FollowEventBatches is FollowEvents that also calls batchEnd (when not
// nil) after the past events and after each group of events that came
// together (one watch response: a transaction's, or several committed
// together), so that a stream can flush once per group instead of once
// per event.
func (r *Repo) FollowEventBatches(ctx context.Context, since int64, project string, fn func(model.Event) error, batchEnd func() error) error {
	if batchEnd == nil {
		batchEnd = func() error { return nil }
	}
	past, rev, err := r.ListEvents(ctx, since, project)
	if err != nil {
		return err
	}
	for _, e := range past {
		if err := fn(e); err != nil {
			return err
		}
	}
	if len(past) > 0 {
		if err := batchEnd(); err != nil {
			return err
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range r.st.Watch(wctx, store.EventsPrefix, rev+1) {
		if resp.Err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("state: follow events: %w", resp.Err)
		}
		sent := false
		for _, we := range resp.Events {
			if we.Type != store.EventPut {
				continue
			}
			e, err := decodeEvent(we.KV)
			if err != nil {
				return err
			}
			if !eventVisible(e, project) {
				continue
			}
			if err := fn(e); err != nil {
				return err
			}
			sent = true
		}
		if sent {
			if err := batchEnd(); err != nil {
				return err
			}
		}
	}
	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// PruneEvents deletes events older than before, at most limit per call
// (0 = 1000). It returns how many it deleted. Controllers call it
// periodically so the event log stays bounded.
func (r *Repo) PruneEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	if limit <= 0 {
		limit = 1000
	}
	kvs, _, err := r.st.List(ctx, store.EventsPrefix)
	if err != nil {
		return 0, fmt.Errorf("state: prune events: %w", err)
	}
	cut := strings.TrimSuffix(store.EventKey(before.UnixNano(), ""), "-")
	var ops []store.Op
	for _, kv := range kvs {
		if kv.Key >= cut || len(ops) >= limit {
			break
		}
		ops = append(ops, store.Delete(kv.Key))
	}
	n := 0
	for len(ops) > 0 {
		chunk := ops[:min(len(ops), 100)]
		ops = ops[len(chunk):]
		if _, _, err := r.txn(ctx, nil, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
	}
	return n, nil
}

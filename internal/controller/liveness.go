package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// liveness marks a ready host down when its liveness key (attached to the
// agent's lease) is gone, and a down host ready again when the key is
// back. Administrative states (maintenance, standby, fenced) are never
// changed here, and VMs on a down host are left alone (HA decides).
func (r *reconciler) liveness(ctx context.Context) error {
	hosts, alive := r.c.hostView()
	now := r.now()
	var errs []error
	for i := range hosts {
		h := &hosts[i]
		var from, to model.HostState
		switch {
		case h.State == model.HostReady && !alive[h.Name] && now.Sub(h.LastSeen) >= r.m.cfg.HostDownGrace:
			from, to = model.HostReady, model.HostDown
		case h.State == model.HostDown && alive[h.Name]:
			from, to = model.HostDown, model.HostReady
		default:
			continue
		}
		if err := r.setHostState(ctx, h.Name, from, to); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// setHostState moves a host from one state to another if it is still in
// from; state.UpdateHost writes the host.down / host.up event with it.
func (r *reconciler) setHostState(ctx context.Context, name string, from, to model.HostState) error {
	_, err := r.repo.UpdateHost(ctx, name, func(h *model.Host) error {
		if h.State != from {
			return state.ErrSkip
		}
		h.State = to
		return nil
	})
	if errors.Is(err, state.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("controller: mark host %s %s: %w", name, to, err)
	}
	r.m.log.Info("host state changed", "host", name, "from", from, "to", to)
	return nil
}

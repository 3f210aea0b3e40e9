package controller

import (
	"context"
	"errors"
	"fmt"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

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

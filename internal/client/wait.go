package client

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// WaitVM polls a VM until cond returns true and returns the VM it last
// saw (nil when cond accepted its absence). cond is called with nil when
// the VM does not exist (404): return true there to wait for a deletion;
// otherwise the not-found error is returned. Transient failures (no
// answer, 503) are polled through; other errors are returned. progress, when not nil, is
// called with the first VM seen and then whenever its phase, host,
// message or last error changes. Polling starts at the client's minimum
// interval and backs off to its maximum (WithPollInterval). It returns
// ctx's error, wrapped, when ctx ends first.
func (c *Client) WaitVM(ctx context.Context, project, name string, cond func(*model.VM) bool, progress func(*model.VM)) (*model.VM, error) {
	interval := c.pollMin
	var prev *model.VM
	for {
		vm, err := c.GetVM(ctx, project, name)
		switch {
		case err == nil:
			if progress != nil && changed(prev, vm) {
				progress(vm)
			}
			prev = vm
			if cond(vm) {
				return vm, nil
			}
		case IsNotFound(err) && cond(nil):
			return nil, nil
		case ctx.Err() != nil:
			return prev, fmt.Errorf("client: wait for vm %s: %w", name, ctx.Err())
		case transient(err):
			// The server restarts or a proxy hiccups: keep polling.
		default:
			return prev, err
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return prev, fmt.Errorf("client: wait for vm %s: %w", name, ctx.Err())
		case <-t.C:
		}
		interval = min(interval*3/2, c.pollMax)
	}
}

// transient reports whether err is worth another poll: no answer at all
// (connection refused, reset) or the server saying it is unavailable.
func transient(err error) bool {
	var e *api.Error
	if errors.As(err, &e) {
		return e.Code == api.CodeUnavailable
	}
	var ue *url.Error
	return errors.As(err, &ue)
}

func changed(prev, cur *model.VM) bool {
	if prev == nil {
		return true
	}
	a, b := prev.Status, cur.Status
	return a.Phase != b.Phase || a.Host != b.Host || a.Message != b.Message || a.LastError != b.LastError
}

// InPhase returns a WaitVM condition that holds once the VM is in one of
// the phases.
func InPhase(phases ...model.Phase) func(*model.VM) bool {
	return func(vm *model.VM) bool {
		if vm == nil {
			return false
		}
		for _, p := range phases {
			if vm.Status.Phase == p {
				return true
			}
		}
		return false
	}
}

// Gone is a WaitVM condition that holds once the VM no longer exists.
func Gone(vm *model.VM) bool { return vm == nil }

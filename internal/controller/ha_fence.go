package controller

import (
	"context"
	"time"

	"github.com/vpool/vpool/internal/ha"
	"github.com/vpool/vpool/internal/model"
)

// HostFencer powers a failed host off for sure (IPMI, Redfish); a nil
// error means it is off. ExecFence runs a command template.
type HostFencer interface {
	Fence(ctx context.Context, h model.Host) error
}

// ExecFence fences with a command template, like ExecPower (text/template
// over the model.Host, split on spaces, no shell), e.g.
// "ipmitool -H {{index .Labels \"vpool.io/bmc\"}} chassis power off".
type ExecFence struct {
	Command string
	// Timeout bounds one run (default 30 s); a command that runs longer
	// has failed, and the host is left to the fence timeout and margin.
	Timeout time.Duration
}

var _ HostFencer = (*ExecFence)(nil)

// Fence implements HostFencer.
func (e *ExecFence) Fence(ctx context.Context, h model.Host) error {
	p := ExecPower{Off: e.Command, Timeout: e.Timeout}
	return p.run(ctx, "fence", e.Command, h)
}

// storeTermPoll is how often the HA loop asks the store's raft term
// while a fence command is configured (and always right before it runs
// one): a change of term makes the control plane unsettled for a fence
// timeout (ha.FenceCommandDue).
const storeTermPoll = time.Second

// fenceState is the fence commands' part of the HA loop's memory.
type fenceState struct {
	// calm is the later of the term's start and the last change of the
	// store's raft term seen (or a failed look at it).
	calm time.Time
	// term is the store's raft term last seen, polled when it was asked.
	term   uint64
	polled time.Time
	// tried holds the hosts whose command ran or runs in this failure
	// (cleared when the host is ready again).
	tried map[string]bool
	// done receives the commands' outcomes; the loop is kicked after each.
	done chan fenceResult
	kick chan struct{}
}

type fenceResult struct {
	host string
	err  error
	took time.Duration
}

// pollStoreTerm reads the store's raft term (Config.StoreTerm) at most
// every storeTermPoll, or now when force; a new term, or no answer,
// makes now the start of the calm.
func (r *reconciler) pollStoreTerm(ctx context.Context, now time.Time, force bool) {
	f, get := &r.ha.fence, r.m.cfg.StoreTerm
	if get == nil || r.m.cfg.Fencer == nil || (!force && now.Sub(f.polled) < storeTermPoll) {
		return
	}
	f.polled = now
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	t, err := get(cctx)
	switch {
	case err != nil:
		r.m.log.Warn("the store's raft term is unknown: no fence command for a fence timeout", "err", err)
		f.calm = now
	case f.term != 0 && t != f.term:
		r.m.log.Info("the store elected a leader: no fence command for a fence timeout", "term", t)
		f.calm = now
	}
	if err == nil {
		f.term = t
	}
}

// startFences starts the fence command of every host due one
// (ha.FenceCommandDue), each on its own goroutine: a slow BMC holds up
// neither the other hosts nor the loop. The store's term is read again
// first, so that an election just now postpones them.
func (r *reconciler) startFences(ctx context.Context, tm ha.Timings, now time.Time, hosts []model.Host, in []ha.Host) {
	fencer := r.m.cfg.Fencer
	if fencer == nil {
		return
	}
	polled := false
	for _, h := range in {
		if !ha.FenceCommandDue(tm, now, r.ha.fence.calm, h) {
			continue
		}
		if !polled {
			polled = true
			r.pollStoreTerm(ctx, now, true)
			if !ha.FenceCommandDue(tm, now, r.ha.fence.calm, h) {
				return
			}
		}
		var host model.Host
		for _, x := range hosts {
			if x.Name == h.Name {
				host = x
			}
		}
		r.ha.fence.tried[h.Name] = true
		r.m.log.Warn("running the fence command", "host", h.Name, "silent", now.Sub(h.LastRenewal).Round(time.Millisecond))
		done, kick := r.ha.fence.done, r.ha.fence.kick
		go func() {
			start := time.Now()
			err := fencer.Fence(ctx, host)
			select {
			case done <- fenceResult{host: host.Name, err: err, took: time.Since(start)}:
			case <-ctx.Done():
				return
			}
			select {
			case kick <- struct{}{}:
			default:
			}
		}()
	}
}

// fenceResults takes the outcomes of the fence commands that ended: a
// success fences the host at once (ha.HostSteps), a failure leaves it
// to the fence timeout and margin. An outcome for a host that renewed
// meanwhile (no longer tried) is dropped.
func (r *reconciler) fenceResults() {
	for {
		select {
		case res := <-r.ha.fence.done:
			if !r.ha.fence.tried[res.host] {
				continue
			}
			if res.err != nil {
				r.m.log.Warn("fence command failed; waiting for the fence timeout and margin", "host", res.host, "err", res.err, "took", res.took)
				if f := r.ha.open[res.host]; f != nil {
					f.FenceCommandError = res.err.Error()
				}
				continue
			}
			r.ha.confirmed[res.host] = true
			r.m.log.Info("fence command reported success", "host", res.host, "took", res.took)
		default:
			return
		}
	}
}

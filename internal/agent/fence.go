package agent

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// Self-fencing (docs/ha.md, "Host failure"): an agent that has not
// renewed its liveness with any server for the fence timeout kills every
// VM it runs, and starts nothing until a renewal succeeds again. The
// servers restart its VMs elsewhere only once the fence timeout plus a
// margin has passed since the last renewal they saw, so by then this host
// runs none of them. The timer starts when the request that renewed was
// sent (never later than the server saw it) and runs on the monotonic
// clock. A hung agent cannot fence itself: hosts that have a hardware
// watchdog or softdog should arm it from the agent's service manager.

// fence is the agent's watchdog state (guarded by Agent.mu).
type fence struct {
	renewedAt time.Time     // when the last renewal that succeeded was sent
	after     time.Duration // the fence timeout the servers asked for (0: none)
	fenced    bool          // the VMs were killed; nothing starts until a renewal
	count     int           // how many times this agent fenced itself
	// killed are the VMs (infoKey) a self-fence of this process killed:
	// when the server answers that such a VM is assigned to another host
	// (HA restarted it there), its stopped copy here is dropped.
	killed map[string]bool
	// longest is the longest time between the sends of two renewals that
	// succeeded: what a fence timeout must outlast on this host.
	longest time.Duration
}

// renewed records a renewal sent at sent that succeeded, with the fence
// timeout the server answered.
func (a *Agent) renewed(sent time.Time, resp api.HeartbeatResponse) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if sent.After(a.fn.renewedAt) {
		if !a.fn.renewedAt.IsZero() {
			a.fn.longest = max(a.fn.longest, sent.Sub(a.fn.renewedAt))
		}
		a.fn.renewedAt = sent
	}
	if resp.FenceMillis > 0 {
		a.fn.after = time.Duration(resp.FenceMillis) * time.Millisecond
	}
	if resp.IntervalMillis > 0 {
		a.hbEvery = time.Duration(resp.IntervalMillis) * time.Millisecond
	} else if resp.IntervalSeconds > 0 {
		a.hbEvery = time.Duration(resp.IntervalSeconds) * time.Second
	}
	if a.fn.fenced {
		a.fn.fenced = false
		a.log.Warn("renewed liveness again after fencing; converging (the server decides which VMs are still this host's)")
		a.wakeLocked()
	}
}

// Fenced reports whether the agent is fenced now, and how many times it
// fenced itself.
func (a *Agent) Fenced() (bool, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fn.fenced, a.fn.count
}

// LongestRenewalGap is the longest time between two successful
// renewals of this agent (their sends) since it started: during a
// control-plane failover it shows how close the agent came to fencing
// itself.
func (a *Agent) LongestRenewalGap() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fn.longest
}

func (a *Agent) isFenced() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.fn.fenced
}

// fenceLoop is the watchdog: every tenth of the fence timeout (at most
// every 100 ms) it checks the time since the last renewal; past the
// fence timeout it kills every VM the driver runs, and keeps killing any
// that runs while the agent stays fenced.
func (a *Agent) fenceLoop(ctx context.Context) {
	t := time.NewTicker(fenceTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.mu.Lock()
		due := a.fn.after > 0 && !a.fn.renewedAt.IsZero() && time.Since(a.fn.renewedAt) >= a.fn.after
		first := due && !a.fn.fenced
		if first {
			a.fn.fenced = true
			a.fn.count++
		}
		since := time.Since(a.fn.renewedAt)
		a.mu.Unlock()
		if !due {
			continue
		}
		if first {
			a.log.Error("no liveness renewal for the fence timeout: killing every VM (self-fence)", "since", since.Round(time.Millisecond))
		}
		a.killAll(ctx)
	}
}

// fenceTick is how often the watchdog looks.
const fenceTick = 50 * time.Millisecond

// killAll kills every VM the driver runs or has paused: all at once
// where the driver can (hypervisor.Fencer), one after another otherwise.
func (a *Agent) killAll(ctx context.Context) {
	if f, ok := a.cfg.Driver.(hypervisor.Fencer); ok {
		killed, err := f.KillAll(ctx)
		for _, in := range killed {
			a.fenceKilledVM(in)
		}
		if err != nil {
			a.log.Error("self-fence: kill VMs", "err", err)
		}
		return
	}
	infos, err := a.cfg.Driver.List(ctx)
	if err != nil {
		a.log.Error("self-fence: list VMs", "err", err)
		return
	}
	for _, in := range infos {
		if in.State != hypervisor.StateRunning && in.State != hypervisor.StatePaused && in.State != hypervisor.StateUnknown {
			continue
		}
		if err := a.cfg.Driver.Kill(ctx, in.ID); err != nil {
			a.log.Error("self-fence: kill VM", "vm", in.ID, "err", err)
			continue
		}
		a.fenceKilledVM(in)
	}
}

// fenceKilledVM records and logs a VM the self-fence killed.
func (a *Agent) fenceKilledVM(in hypervisor.Info) {
	a.mu.Lock()
	if a.fn.killed == nil {
		a.fn.killed = map[string]bool{}
	}
	a.fn.killed[infoKey(in)] = true
	a.mu.Unlock()
	a.log.Warn("self-fence: killed VM", "vm", in.ID)
}

// errNotOwner says the server (from the store) names another host as the
// owner of a VM's disks, or another epoch than the assignment's.
var errNotOwner = fmt.Errorf("agent: this host does not own the VM's disks")

// confirmOwner asks the server, which reads the store, whether this host
// owns vm's disks at the epoch of the assignment: an agent creates or
// starts a VM only then, so a host back from being fenced never starts a
// VM that HA restarted elsewhere (its assignment list may be stale).
func (a *Agent) confirmOwner(ctx context.Context, vm *model.VM) error {
	if a.isFenced() {
		return fmt.Errorf("%w: the host is fenced (no liveness renewal)", errNotOwner)
	}
	path := fmt.Sprintf("%s/vms/%s/%s/owner", api.AgentPrefix, url.PathEscape(vm.Project), url.PathEscape(vm.Name))
	var o model.DiskOwner
	err := a.client.do(ctx, http.MethodGet, path, nil, &o)
	if httpStatus(err) == http.StatusConflict || httpStatus(err) == http.StatusNotFound {
		return fmt.Errorf("%w: %v", errNotOwner, err)
	}
	if err != nil {
		return fmt.Errorf("agent: ask the owner of %s: %w", vm.Key(), err)
	}
	want := int64(0)
	if vm.Status.Owner != nil {
		want = vm.Status.Owner.Epoch
	}
	if o.Host != a.cfg.HostName || o.Epoch != want {
		return fmt.Errorf("%w: owner %s epoch %d, the assignment has epoch %d", errNotOwner, o.Host, o.Epoch, want)
	}
	return nil
}

// fenceKilled reports whether a self-fence of this process killed the
// VM key, and forgets it when forget is set.
func (a *Agent) fenceKilled(key string, forget bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := a.fn.killed[key]
	if forget {
		delete(a.fn.killed, key)
	}
	return k
}

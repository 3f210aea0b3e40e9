package fleet

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// pollLoop long-polls the host's assignments until ctx ends and acts on
// each answer.
func (h *host) pollLoop(ctx context.Context) {
	var after int64
	fails := 0
	for ctx.Err() == nil {
		path := fmt.Sprintf("%s/assignments?after=%d&wait=%s&delta=true", api.AgentPrefix, after, h.f.cfg.PollWait)
		pctx, cancel := context.WithTimeout(ctx, h.f.cfg.PollWait+15*time.Second)
		var as api.Assignments
		err := h.call(pctx, h.client, http.MethodGet, path, "", nil, &as)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			fails++
			h.f.stats.pollFailed()
			after = 0 // answer afresh from whichever server we reach
			if !sleep(ctx, min(time.Duration(fails)*200*time.Millisecond, 5*time.Second)) {
				return
			}
			continue
		}
		fails = 0
		after = as.Revision
		h.apply(ctx, as)
	}
}

// apply takes an assignment answer (every VM of the host, or a delta:
// those changed and those that left): new VMs start, stopped ones stop,
// deleted ones go, and each change is reported.
func (h *host) apply(ctx context.Context, as api.Assignments) {
	type todo struct {
		key string
		rep api.VMReport
	}
	var reports []todo
	h.mu.Lock()
	seen := make(map[string]bool, len(as.VMs))
	todoVMs := make([]*simVM, 0, len(as.VMs))
	for i := range as.VMs {
		vm := as.VMs[i]
		key := vm.Project + "/" + vm.Name
		seen[key] = true
		v := h.vms[key]
		if v == nil || v.vm.UID != vm.UID {
			v = &simVM{trace: traceIndex(key)}
			h.vms[key] = v
		}
		v.vm = vm
		todoVMs = append(todoVMs, v)
	}
	if as.Delta {
		for _, key := range as.Removed {
			delete(h.vms, key)
		}
		for key, v := range h.vms {
			if v.retry && !seen[key] { // a delta does not list it again
				todoVMs = append(todoVMs, v)
			}
		}
	} else {
		for key := range h.vms {
			if !seen[key] {
				delete(h.vms, key)
			}
		}
	}
	for _, v := range todoVMs {
		vm := &v.vm
		key := vm.Project + "/" + vm.Name
		v.retry = false
		rep := api.VMReport{Project: vm.Project, Name: vm.Name, UID: vm.UID}
		switch {
		case vm.DeletedAt != nil:
			rep.Gone = true
		case vm.Status.Migration != "":
			continue // fleet hosts do not migrate: the migration fails on its own
		case vm.Spec.Power == model.PowerStopped:
			rep.Phase = model.PhaseStopped
		default:
			rep.Phase = model.PhaseRunning
		}
		if !rep.Gone && (v.reported == rep.Phase || vm.Status.Phase == rep.Phase) {
			v.reported = rep.Phase
			continue
		}
		reports = append(reports, todo{key, rep})
	}
	h.mu.Unlock()
	for _, t := range reports {
		err := h.call(ctx, h.client, http.MethodPut, fmt.Sprintf("%s/vms/%s/%s/status", api.AgentPrefix, t.rep.Project, t.rep.Name), "", t.rep, nil)
		h.f.stats.report(err)
		h.mu.Lock()
		v := h.vms[t.key]
		if err != nil && codeOf(err) != http.StatusNotFound {
			if v != nil {
				v.retry = true // the next answer tries again
			}
			h.mu.Unlock()
			continue
		}
		if v != nil {
			if t.rep.Gone {
				delete(h.vms, t.key)
			} else {
				v.reported = t.rep.Phase
			}
		}
		h.mu.Unlock()
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// agentStatusInterval is a real agent's default StatusInterval, which
// bounds its backups poll's wait (internal/agent).
const agentStatusInterval = 10 * time.Second

// sidePoll is one of the long polls a real agent holds beside its
// assignments (internal/agent: migrations, consoles, backups), with the
// agent's path, cursor and wait. A fleet host acts on none of their
// answers (it migrates, serves consoles and backs up nothing), but holds
// them as an agent does: before the ninth round the fleet polled its
// assignments only, one request a host every 30 s where an agent at rest
// sends four, so the server's cost at rest was measured without most of
// the requests it answers (docs/scale.md).
type sidePoll struct {
	name   string
	cursor bool // the path takes after=<the last answer's revision>
	wait   func(pollWait time.Duration) time.Duration
}

// sidePolls are a real agent's polls besides the assignments'.
var sidePolls = []sidePoll{
	{name: "migrations", cursor: true, wait: func(w time.Duration) time.Duration { return w }},
	{name: "consoles", wait: func(w time.Duration) time.Duration { return w }},
	// restores also wait on VM placement: the agent's wait is the
	// shorter of the two
	{name: "backups", cursor: true, wait: func(w time.Duration) time.Duration { return min(w, agentStatusInterval) }},
}

// sideLoop holds one side poll until ctx ends.
func (h *host) sideLoop(ctx context.Context, p sidePoll) {
	var after int64
	fails := 0
	wait := p.wait(h.f.cfg.PollWait)
	for ctx.Err() == nil {
		path := fmt.Sprintf("%s/%s?wait=%s", api.AgentPrefix, p.name, wait)
		if p.cursor {
			path = fmt.Sprintf("%s/%s?after=%d&wait=%s", api.AgentPrefix, p.name, after, wait)
		}
		pctx, cancel := context.WithTimeout(ctx, wait+15*time.Second)
		var ans struct {
			Revision int64 `json:"revision"`
		}
		err := h.call(pctx, h.client, http.MethodGet, path, "", nil, &ans)
		cancel()
		if ctx.Err() != nil {
			return
		}
		h.f.stats.sidePoll(err)
		if err != nil {
			fails++
			after = 0
			if !sleep(ctx, min(time.Duration(fails)*200*time.Millisecond, 5*time.Second)) {
				return
			}
			continue
		}
		fails = 0
		after = ans.Revision
	}
}

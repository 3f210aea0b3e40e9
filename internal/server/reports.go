package server

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// Agents' status reports are group-committed: reports arriving together
// (5,000 VMs placed a second are 5,000 "running" reports a second) are
// applied to the VMs as the cache holds them and written in one
// transaction, each guarded on the revision it was applied to
// (state.ReplaceVMs). A report whose VM the cache has not caught up
// with, that finishes a deletion or answers a resize, and every report of
// a transaction that lost a guard, takes the old way: read, apply, write
// alone (applyReport).

// reportBatch is how many reports one transaction carries (two
// operations each: the VM and its phase event).
const reportBatch = (state.MaxTxnOps - 8) / 2

type reportReq struct {
	host string
	rep  api.VMReport
	out  *model.VM
	raw  json.RawMessage // out as stored (revision spliced in); nil: encode out
	err  error
	done chan struct{}
}

type reportQueue struct {
	mu      sync.Mutex
	pending []*reportReq
	running bool
}

// reportStatus applies one status report, batched with the others that
// arrive meanwhile. raw, when not nil, is the VM's JSON as stored (the
// answer, without encoding the VM again).
func (s *Server) reportStatus(ctx context.Context, host string, rep api.VMReport) (vm *model.VM, raw json.RawMessage, err error) {
	if rep.Gone || rep.Resize != nil {
		vm, err := s.applyReport(ctx, host, rep)
		return vm, nil, err
	}
	req := &reportReq{host: host, rep: rep, done: make(chan struct{})}
	q := &s.reports
	q.mu.Lock()
	q.pending = append(q.pending, req)
	lead := !q.running
	q.running = true
	q.mu.Unlock()
	if lead {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		for {
			batch := q.take()
			if batch == nil {
				break
			}
			s.commitReports(bctx, batch)
		}
		cancel()
	}
	select {
	case <-req.done:
		return req.out, req.raw, req.err
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

func (q *reportQueue) take() []*reportReq {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		q.running = false
		return nil
	}
	n := min(len(q.pending), reportBatch)
	batch := q.pending[:n:n]
	q.pending = q.pending[n:]
	return batch
}

// commitReports applies a batch of reports to the cached VMs and writes
// them in one transaction; the rest go one by one.
func (s *Server) commitReports(ctx context.Context, batch []*reportReq) {
	defer func() {
		for _, req := range batch {
			close(req.done)
		}
	}()
	now := s.now()
	var ws []state.StatusWrite
	var mine, alone []*reportReq
	seen := map[string]bool{}
	for _, req := range batch {
		key := store.VMKey(req.rep.Project, req.rep.Name)
		old := s.cachedVM(key)
		if old == nil || seen[key] {
			alone = append(alone, req)
			continue
		}
		seen[key] = true
		nv := reportCopy(old.vm)
		switch err := reportChange(nv, req.host, req.rep, now); {
		case errors.Is(err, errNotYours), errors.Is(err, errFinish):
			alone = append(alone, req) // the store has the last word
		case err != nil:
			req.err = err
		default:
			ws = append(ws, state.StatusWrite{Old: old.vm, New: nv})
			mine = append(mine, req)
		}
	}
	if len(ws) > 0 {
		ok, _, err := s.repo.ReplaceVMs(ctx, ws)
		switch {
		case err != nil && !errors.Is(err, state.ErrNotStatusOnly):
			for _, req := range mine {
				req.err = err
			}
		case ok:
			for i, req := range mine {
				req.out, req.raw = ws[i].New, state.VMJSON(ws[i].Stored, ws[i].New.Revision)
			}
		default:
			alone = append(alone, mine...)
		}
	}
	for _, req := range alone {
		req.out, req.err = s.applyReport(ctx, req.host, req.rep)
	}
}

// cachedVMRec is a VM as the cache holds it: decoded (shared: never
// changed), and its bytes.
type cachedVMRec struct {
	vm  *model.VM
	raw []byte
}

// cachedVM returns a VM from the cache (nil when the cache has none or
// could not decode it).
func (s *Server) cachedVM(key string) *cachedVMRec {
	var rec *cachedVMRec
	s.view.c.Read(func(int64) {
		if x := s.view.vms.Get(key); x != nil {
			if vm := cachedVMOf(x); vm != nil {
				rec = &cachedVMRec{vm: vm, raw: x.Value}
			}
		}
	})
	return rec
}

// reportCopy is the copy of a cached VM that reportChange may change: a
// shallow copy, with its own copy of what reportChange changes in place
// (the pending resize); everything else it replaces, never edits.
// Cheaper than decoding the stored JSON again.
func reportCopy(vm *model.VM) *model.VM {
	nv := *vm
	if r := vm.Status.Resize; r != nil {
		rc := *r
		nv.Status.Resize = &rc
	}
	return &nv
}

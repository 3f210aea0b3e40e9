package state

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// TestFollowEventBatchesEndsEachGroupOnce: the events one transaction
// wrote (a batch create's vm.created events) come to fn together and
// batchEnd is called once after them, not once per event: the API's event
// stream flushes its connection once per group (issue 14).
func TestFollowEventBatchesEndsEachGroupOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := newRepo(t)
	mustProject(t, r, "a", model.Quota{})
	_, rev, err := r.ListEvents(ctx, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	type mark struct {
		event string // "" for a batch end
	}
	got := make(chan mark, 64)
	fctx, fcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- r.FollowEventBatches(fctx, rev, "", func(e model.Event) error { got <- mark{e.Object}; return nil },
			func() error { got <- mark{}; return nil })
	}()
	time.Sleep(50 * time.Millisecond) // the watch is open
	var vms []*model.VM
	for i := range 5 {
		vms = append(vms, mkVM("a", fmt.Sprintf("v%d", i), 1, 64*model.MiB))
	}
	if _, err := r.CreateVMs(ctx, "a", vms); err != nil {
		t.Fatal(err)
	}
	var seq []string
	for len(seq) < 6 {
		select {
		case m := <-got:
			seq = append(seq, m.event)
		case <-ctx.Done():
			t.Fatalf("followed only %q", seq)
		}
	}
	for i, e := range seq[:5] {
		if e != fmt.Sprintf("vm/a/v%d", i) {
			t.Fatalf("followed %q: want the 5 VMs' events, then one batch end", seq)
		}
	}
	if seq[5] != "" {
		t.Fatalf("followed %q: want one batch end after the 5 events", seq)
	}
	fcancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}

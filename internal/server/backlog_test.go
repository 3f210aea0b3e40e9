package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// post creates VMs by one POST and returns the status, the error body
// and the Retry-After header.
func (ts *testServer) postVMs(path string, body any) (int, api.Error, string) {
	ts.t.Helper()
	js, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", "http://"+ts.Addr()+path, bytes.NewReader(js))
	req.Header.Set("Authorization", "Bearer "+ts.AdminToken())
	resp, err := ts.client.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	var e api.Error
	if resp.StatusCode >= 300 {
		_ = json.NewDecoder(resp.Body).Decode(&e)
	}
	return resp.StatusCode, e, resp.Header.Get("Retry-After")
}

// waitBacklog waits until the server's view counts n VMs waiting for the
// scheduler.
func waitBacklog(t *testing.T, ts *testServer, n int) {
	t.Helper()
	for range 500 {
		if ts.backlog.pending() == n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the view counts %d VMs waiting for the scheduler, want %d", ts.backlog.pending(), n)
}

// decide writes the scheduler's first decision on a VM: an explanation
// (here: it fits nowhere), as the scheduler does.
func decide(t *testing.T, ts *testServer, name string) {
	t.Helper()
	_, err := ts.Repo().UpdateVM(context.Background(), "default", name, func(v *model.VM) error {
		v.Status.Explanation = &model.Explanation{Summary: "no host fits"}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCreatesWaitForPlacementBacklog: with MaxPendingPlacements VMs
// waiting for the scheduler, a create waits for room and, when none comes
// within PendingWait, is refused with 429 rate_limited, a Retry-After and
// a message naming the limit and its flag; a VM the scheduler decided on
// (placed, or fits nowhere: it has an explanation) no longer counts, and a
// waiting create goes on as soon as one does. Issue 14: nothing held
// creates back when admission ran ahead of placement, so create-to-placed
// grew without bound.
func TestCreatesWaitForPlacementBacklog(t *testing.T) {
	ts := startServer(t, nil, func(c *Config) {
		c.MaxPendingPlacements, c.PendingWait = 3, 300*time.Millisecond
	})
	for _, n := range []string{"a1", "a2", "a3"} {
		if code, e, _ := ts.postVMs("/api/v1/vms", vmReq(n)); code != 201 {
			t.Fatalf("create %s under the limit: %d %+v", n, code, e)
		}
	}
	waitBacklog(t, ts, 3)
	code, e, retry := ts.postVMs("/api/v1/vms", vmReq("a4"))
	if code != http.StatusTooManyRequests || e.Code != api.CodeRateLimited || retry == "" ||
		!strings.Contains(e.Message, "at most 3") || !strings.Contains(e.Message, "--max-pending-placements") {
		t.Fatalf("a create over the backlog: %d %+v Retry-After %q, want 429 rate_limited naming the limit and its flag, with Retry-After", code, e, retry)
	}
	spec := vmReq("x").Spec
	batch := api.VMBatchRequest{Prefix: "b", Count: 2, Spec: &spec}
	if code, e, _ := ts.postVMs("/api/v1/vms:batch", batch); code != http.StatusTooManyRequests {
		t.Fatalf("a batch over the backlog: %d %+v, want 429", code, e)
	}
	// A waiting create goes on when the scheduler decides on one VM.
	got := make(chan int, 1)
	go func() {
		code, _, _ := ts.postVMs("/api/v1/vms", vmReq("a4"))
		got <- code
	}()
	time.Sleep(50 * time.Millisecond) // it waits now (or, on a slow machine, soon)
	decide(t, ts, "a1")
	if code := <-got; code != 201 {
		t.Fatalf("the waiting create after a VM was decided: %d, want 201", code)
	}
	waitBacklog(t, ts, 3)
	// A deleted VM no longer counts either.
	ts.mustCall(204, "DELETE", "/api/v1/vms/a2", ts.AdminToken(), nil, nil)
	waitBacklog(t, ts, 2)
	if code, e, _ := ts.postVMs("/api/v1/vms", vmReq("a5")); code != 201 {
		t.Fatalf("a create after a delete: %d %+v", code, e)
	}
}

// A negative limit holds nothing back.
func TestNoPlacementBacklogBound(t *testing.T) {
	ts := startServer(t, nil, func(c *Config) { c.MaxPendingPlacements = -1 })
	for _, n := range []string{"a1", "a2", "a3", "a4", "a5"} {
		if code, e, _ := ts.postVMs("/api/v1/vms", vmReq(n)); code != 201 {
			t.Fatalf("create %s without a bound: %d %+v", n, code, e)
		}
	}
}

// Creates that wait for room go in the order they came: room freed by
// one placement goes to the first in line, not to whichever waiter wins
// the race (a first version woke them all: some lost every race until
// their wait ran out).
func TestPlacementBacklogFirstComeFirstServed(t *testing.T) {
	b := newPlaceBacklog(2, time.Minute)
	b.reset(2)
	ctx := context.Background()
	order := make(chan int, 3)
	for i := range 3 {
		go func() {
			rel, err := b.acquire(ctx, httptest.NewRecorder(), 1)
			if err != nil {
				t.Error(err)
				return
			}
			// its VM is admitted: the view counts it, the hold ends
			b.changed(nil, &model.VM{Status: model.VMStatus{Phase: model.PhasePending}})
			rel()
			order <- i
		}()
		for { // the i-th is in line before the next comes
			b.mu.Lock()
			n := len(b.line)
			b.mu.Unlock()
			if n == i+1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	pending := &model.VM{Status: model.VMStatus{Phase: model.PhasePending}}
	placed := &model.VM{Status: model.VMStatus{Phase: model.PhaseCreating, Host: "h"}}
	for want := range 3 {
		b.changed(pending, placed) // one placement: room for one
		if got := <-order; got != want {
			t.Fatalf("room for one went to the create that came %d-th, want the %d-th", got+1, want+1)
		}
	}
}

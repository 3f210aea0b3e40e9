package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// followStream opens ?follow=true and returns a channel of decoded events.
func followStream(t *testing.T, ts *testServer, ctx context.Context, token, query string) <-chan model.Event {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ts.Addr()+"/api/v1/events?follow=true"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("follow: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := make(chan model.Event, 100)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var e model.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Errorf("bad NDJSON line %q: %v", sc.Text(), err)
				return
			}
			out <- e
		}
	}()
	return out
}

func TestEventsFollowStream(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "other"}, nil)
	var before api.EventList
	ts.mustCall(200, "GET", "/api/v1/events", admin, nil, &before)
	since := before.Items[len(before.Items)-1].ID
	member := ts.tokenFor("default", model.RoleMember)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	all := followStream(t, ts, ctx, admin, "&since="+itoa(since))
	mine := followStream(t, ts, ctx, member, "&since="+itoa(since))
	ts.mustCall(201, "POST", "/api/v1/vms?project=other", admin, vmReq("hidden"), nil)
	ts.mustCall(201, "POST", "/api/v1/vms", member, vmReq("seen"), nil)
	ts.mustCall(202, "POST", "/api/v1/vms/seen/stop", member, nil, nil)
	if _, err := ts.Repo().UpdateVM(ctx, "default", "seen", func(v *model.VM) error { v.Status.Phase = model.PhaseScheduling; return nil }); err != nil {
		t.Fatal(err)
	}
	want := []string{"vm.created vm/other/hidden", "vm.created vm/default/seen", "vm.stop vm/default/seen", "vm.phase vm/default/seen"}
	for i, w := range want {
		e := <-all
		if got := e.Kind + " " + e.Object; got != w {
			t.Fatalf("admin stream event %d = %q, want %q", i, got, w)
		}
	}
	for i, w := range want[1:] {
		e := <-mine
		if got := e.Kind + " " + e.Object; got != w {
			t.Fatalf("member stream event %d = %q, want %q (other projects must not show)", i, got, w)
		}
	}
	cancel()
	for range all {
	}
}

// runQuotaRace fires 50 concurrent HTTP creates against a quota of 10
// VMs: exactly 10 are accepted, 40 refused with quota_exceeded.
func runQuotaRace(t *testing.T, ts *testServer) {
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "race", Quota: model.Quota{VMs: 10}}, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[string]int{}
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, e := ts.call("POST", "/api/v1/vms?project=race", admin, vmReq(fmt.Sprintf("vm-%d", i)), nil)
			mu.Lock()
			defer mu.Unlock()
			codes[fmt.Sprintf("%d %s %s", code, e.Code, e.Field)]++
		}()
	}
	wg.Wait()
	if codes["201  "] != 10 || codes["403 quota_exceeded quota.vms"] != 40 || len(codes) != 2 {
		t.Fatalf("answers %v; want 10 × 201 and 40 × 403 quota_exceeded", codes)
	}
	var list api.VMList
	ts.mustCall(200, "GET", "/api/v1/vms?project=race", admin, nil, &list)
	var pv api.ProjectView
	ts.mustCall(200, "GET", "/api/v1/projects/race", admin, nil, &pv)
	if len(list.Items) != 10 || pv.Usage.VMs != 10 {
		t.Fatalf("stored %d VMs, usage %d; want 10", len(list.Items), pv.Usage.VMs)
	}
	kvs, _, _ := ts.st.List(context.Background(), store.VMProjectPrefix("race"))
	if len(kvs) != 10 {
		t.Fatalf("store holds %d VMs", len(kvs))
	}
}

func TestConcurrentCreatesAgainstQuota(t *testing.T) {
	runQuotaRace(t, startServer(t, nil))
}

// TestConcurrentCreatesAgainstQuotaTwoServers races two API servers on
// one store: only compare-and-swap keeps them honest.
func TestConcurrentCreatesAgainstQuotaTwoServers(t *testing.T) {
	a := startServer(t, nil)
	b := startServer(t, a.st)
	admin := a.AdminToken()
	a.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "race2", Quota: model.Quota{VMs: 10}}, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv := a
			if i%2 == 1 {
				srv = b
			}
			code, _ := srv.call("POST", "/api/v1/vms?project=race2", admin, vmReq(fmt.Sprintf("vm-%d", i)), nil)
			mu.Lock()
			defer mu.Unlock()
			if code == 201 {
				ok++
			}
		}()
	}
	wg.Wait()
	kvs, _, _ := a.st.List(context.Background(), store.VMProjectPrefix("race2"))
	if ok != 10 || len(kvs) != 10 {
		t.Fatalf("accepted %d, stored %d; want 10", ok, len(kvs))
	}
}

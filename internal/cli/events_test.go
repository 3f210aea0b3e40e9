package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vpool/vpool/internal/model"
)

// follow runs `events -f` until stdout holds want lines, then cancels it
// like Ctrl-C would.
func follow(t *testing.T, f *fakeServer, want int, args ...string) (result, []string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan result, 1)
	go func() {
		done <- invocation{ctx: ctx, stdout: out}.run(t, append([]string{"--addr", f.srv.URL, "--token", goodToken, "events", "-f"}, args...)...)
	}()
	deadline := time.After(10 * time.Second) // a hang guard, not a timing assertion
	for strings.Count(out.String(), "\n") < want {
		select {
		case res := <-done:
			t.Fatalf("events -f ended early: exit %d, stderr %q, stdout %q", res.code, res.stderr, res.stdout)
		case <-deadline:
			t.Fatalf("events -f printed %q, want %d lines", out.String(), want)
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	res := <-done
	return res, lines(res.stdout)
}

func TestEventsFollow(t *testing.T) {
	f := newFake(t)
	seed(f)
	f.stream = []model.Event{
		{ID: 14, Time: now.Add(time.Second), Kind: "vm.created", Object: "vm/default/new1", Message: "created"},
		{ID: 15, Time: now.Add(2 * time.Second), Kind: "vm.phase", Object: "vm/default/new1", From: "pending", To: "scheduling"},
	}
	res, got := follow(t, f, 6)
	if res.code != 0 {
		t.Errorf("exit %d after Ctrl-C, want 0; stderr %q", res.code, res.stderr)
	}
	want := []string{
		"2030-01-02T02:44:05Z  vm.created  vm/default/web1  created by admin",
		"2030-01-02T02:59:05Z  vm.phase  vm/default/web1  pending -> scheduling",
		"2030-01-02T03:00:05Z  vm.phase  vm/default/web1  on h1 [creating -> running]",
		"2030-01-02T03:03:05Z  host.down  host/h3  lease expired",
		"2030-01-02T03:04:06Z  vm.created  vm/default/new1  created",
		"2030-01-02T03:04:07Z  vm.phase  vm/default/new1  pending -> scheduling",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
	// The stream resumes after the last listed event.
	var queries []string
	for _, c := range f.seen() {
		if c.Pattern == "GET /api/v1/events" {
			queries = append(queries, c.Query)
		}
	}
	if len(queries) < 2 || queries[0] != "" || queries[1] != "follow=true&since=13" {
		t.Errorf("event queries = %q, want a list then follow=true&since=13", queries)
	}
}

func TestEventsFollowJSON(t *testing.T) {
	f := newFake(t)
	seed(f)
	f.stream = []model.Event{{ID: 20, Time: now, Kind: "host.ready", Object: "host/h4", Message: "joined"}}
	res, got := follow(t, f, 2, "-o", "json", "--since", "12")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	var ids []int64
	for _, l := range got {
		var ev model.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("line %q is not one JSON event: %v", l, err)
		}
		ids = append(ids, ev.ID)
	}
	if diff := cmp.Diff([]int64{13, 20}, ids); diff != "" {
		t.Errorf("ids (-want +got):\n%s", diff)
	}
}

func TestEventsFollowYAMLSinceDuration(t *testing.T) {
	f := newFake(t)
	seed(f)
	f.stream = []model.Event{
		{ID: 21, Time: now.Add(-time.Hour), Kind: "old", Object: "x"}, // before --since: dropped
		{ID: 22, Time: now, Kind: "vm.deleted", Object: "vm/default/db"},
	}
	res, _ := follow(t, f, 11, "-o", "yaml", "--since", "2m") // two documents
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if strings.Count(res.stdout, "---\n") != 2 || !strings.Contains(res.stdout, "kind: host.down") ||
		!strings.Contains(res.stdout, "kind: vm.deleted") || strings.Contains(res.stdout, "kind: old") {
		t.Errorf("stdout:\n%s", res.stdout)
	}
}

func TestEventsFollowRefused(t *testing.T) {
	f := newFake(t)
	res := invocation{}.run(t, "--addr", f.srv.URL, "--token", "wrong", "events", "-f")
	if res.code != 1 || !strings.Contains(res.stderr, "missing or unknown bearer token") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
}

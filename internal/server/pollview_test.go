package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// pollView answers at once without an etag or with a stale one, waits
// for the next change when the etag is current, answers the unchanged
// view when the wait ends, and refuses a bad wait naming the field.
func TestPollView(t *testing.T) {
	s := &Server{}
	s.initDrain()
	ready := make(chan struct{})
	close(ready)
	var mu sync.Mutex
	tag, wake := "v1", make(chan struct{})
	seen := make(chan string, 16) // the etag of every snapshot taken
	snap := func() (any, string, <-chan struct{}) {
		mu.Lock()
		defer mu.Unlock()
		seen <- tag
		return map[string]string{"etag": tag}, tag, wake
	}
	call := func(query string) (int, string, error) {
		rec := httptest.NewRecorder()
		err := s.pollView(rec, httptest.NewRequest("GET", "/agent/v1/x?"+query, nil), "test view", ready, snap)
		var v map[string]string
		_ = json.Unmarshal(rec.Body.Bytes(), &v)
		return rec.Code, v["etag"], err
	}
	if code, got, err := call(""); err != nil || code != http.StatusOK || got != "v1" {
		t.Fatalf("no etag: %d %q %v", code, got, err)
	}
	if _, got, _ := call("etag=old"); got != "v1" {
		t.Fatalf("stale etag answered %q", got)
	}
	if _, got, _ := call("etag=v1&wait=10ms"); got != "v1" {
		t.Fatalf("current etag after the wait answered %q", got)
	}
	for len(seen) > 0 {
		<-seen
	}
	done := make(chan string)
	go func() { _, got, _ := call("etag=v1&wait=30s"); done <- got }()
	<-seen // the poll saw v1 and waits for a change
	select {
	case got := <-done:
		t.Fatalf("a current etag answered %q at once", got)
	case <-time.After(50 * time.Millisecond):
	}
	mu.Lock()
	old := wake
	tag, wake = "v2", make(chan struct{})
	mu.Unlock()
	close(old)
	if got := <-done; got != "v2" {
		t.Fatalf("a change answered %q, want v2", got)
	}
	_, _, err := call("wait=soon")
	if he, ok := err.(*httpError); !ok || he.status != http.StatusBadRequest || he.body.Field != "wait" || !strings.Contains(he.body.Message, "30s") {
		t.Fatalf("bad wait: %v", err)
	}
}

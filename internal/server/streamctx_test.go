package server

import (
	"net/http/httptest"
	"runtime"
	"testing"
	"time"
)

// TestStreamContextStartsNoGoroutine: a long poll's context ends with
// its request or the server's drain without a goroutine of its own (at
// 10,000 hosts one a poll was 80 MiB of stacks), and its cancel leaves
// the drain nothing to do.
func TestStreamContextStartsNoGoroutine(t *testing.T) {
	s := &Server{}
	s.initDrain()
	const polls = 500
	before := runtime.NumGoroutine()
	var ends []func()
	var open []interface{ Done() <-chan struct{} }
	for range polls {
		ctx, cancel := s.streamContext(httptest.NewRequest("GET", "/agent/v1/assignments", nil))
		ends, open = append(ends, cancel), append(open, ctx)
	}
	// the old streamContext started a goroutine a call: +500
	if grew := runtime.NumGoroutine() - before; grew > polls/10 {
		t.Fatalf("%d stream contexts started %d goroutines", polls, grew)
	}
	ends[0]() // a request that ended
	select {
	case <-open[0].Done():
	default:
		t.Fatal("cancel did not end the context")
	}
	select {
	case <-open[1].Done():
		t.Fatal("one poll's cancel ended another")
	default:
	}
	s.startDrain()
	for i, ctx := range open {
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("poll %d still open after the drain", i)
		}
	}
	for _, end := range ends {
		end()
	}
}

package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
)

// When beats lag (none returns), hosts that just joined still enter the
// schedule: otherwise the joins stall behind them.
func TestScheduleTakesJoinsWhileBeatsLag(t *testing.T) {
	f := &Fleet{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan *host)
	stuck := func(ctx context.Context, _ *host) time.Time { <-ctx.Done(); return time.Now() }
	done := make(chan struct{})
	go func() { defer close(done); f.schedule(ctx, started, stuck) }()
	send := func(i int) {
		t.Helper()
		select {
		case started <- &host{f: f, name: fmt.Sprintf("h-%d", i)}:
		case <-time.After(10 * time.Second):
			t.Fatalf("host %d not taken into the schedule: joins stall while beats lag", i)
		}
	}
	for i := range 50 {
		send(i)
	}
	// every first beat falls within firstBeatSpread of the start: by then
	// every host has a beat that does not return
	time.Sleep(firstBeatSpread + 100*time.Millisecond)
	for i := 50; i < 100; i++ {
		send(i)
	}
	cancel()
	<-done
}

// Nothing caps the beats in flight: while answers are slow every host has
// its beat out at once, as real agents would (before, 64 workers sent
// them, so 1,000 hosts at a beat a second fell behind once a round trip
// took over 64 ms: the harness, not the server, was the limit). And a
// host has one beat in flight at most, its next one due when it returns.
func TestScheduleCapsNoBeats(t *testing.T) {
	const hosts = 300
	f := &Fleet{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan *host, hosts)
	var mu sync.Mutex
	inFlight, most := map[*host]int{}, 0
	all := make(chan struct{})
	release := make(chan struct{})
	slow := func(ctx context.Context, h *host) time.Time {
		mu.Lock()
		inFlight[h]++
		if inFlight[h] > 1 {
			t.Errorf("%s has %d beats in flight", h.name, inFlight[h])
		}
		n := 0
		for _, c := range inFlight {
			n += c
		}
		most = max(most, n)
		if n == hosts {
			close(all)
		}
		mu.Unlock()
		select { // an answer that takes long
		case <-release:
		case <-ctx.Done():
		}
		mu.Lock()
		inFlight[h]--
		mu.Unlock()
		return time.Now().Add(10 * time.Millisecond) // due again soon: a second beat would overlap if allowed
	}
	done := make(chan struct{})
	go func() { defer close(done); f.schedule(ctx, started, slow) }()
	for i := range hosts {
		started <- &host{f: f, name: fmt.Sprintf("h-%d", i)}
	}
	select {
	case <-all:
	case <-time.After(firstBeatSpread + 20*time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("at most %d of %d hosts had a beat in flight while answers were slow", most, hosts)
	}
	close(release)
	time.Sleep(100 * time.Millisecond) // beats return and go out again
	cancel()
	<-done
}

// A host beats at the interval the answer gives in milliseconds (a
// server that stretches the interval says 1.5 s; IntervalSeconds, 1, is
// for agents that know only it), from its next beat on: due one interval
// (±10 %) after this one's send. A failed beat is tried again sooner.
func TestBeatTakesTheAnswersInterval(t *testing.T) {
	var fail atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_ = json.NewEncoder(w).Encode(api.HeartbeatResponse{IntervalSeconds: 1, IntervalMillis: 1500, LeaseTTLSeconds: 8})
	}))
	defer srv.Close()
	f := &Fleet{cfg: Config{Servers: []string{srv.URL}, TraceStep: DefaultTraceStep}, log: slog.New(slog.DiscardHandler)}
	h := &host{f: f, name: "h", client: srv.Client(), vms: map[string]*simVM{}}
	sent := time.Now()
	next := h.beat(context.Background())
	if h.interval != 1500*time.Millisecond {
		t.Fatalf("the host beats every %s, told 1500 ms", h.interval)
	}
	if d := next.Sub(sent); d < 1350*time.Millisecond || d > 1650*time.Millisecond+time.Since(sent) {
		t.Fatalf("next beat due %s after the send, want 1.5 s ± 10 %%", d)
	}
	fail.Store(true)
	before := time.Now()
	if d := h.beat(context.Background()).Sub(before); d > 1350*time.Millisecond {
		t.Fatalf("a failed beat tried again after %s, not sooner than the interval", d)
	}
}

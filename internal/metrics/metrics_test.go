package metrics

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func scrape(t testing.TB, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestGaugesAndCounters(t *testing.T) {
	m := New()
	m.SetCounter(func(context.Context) (Counts, error) {
		return Counts{HostsByState: map[string]int{"ready": 2, "odd": 1}, VMsByPhase: map[string]int{"running": 5}}, nil
	})
	m.ReconcileError("scheduler")
	m.APILatency.WithLabelValues("GET /x", "200").Observe(0.01)
	out := scrape(t, m)
	for _, want := range []string{`vpool_hosts{state="ready"} 2`, `vpool_hosts{state="down"} 0`, `vpool_hosts{state="odd"} 1`,
		`vpool_vms{phase="running"} 5`, `vpool_vms{phase="failed"} 0`, `vpool_reconcile_errors_total{controller="scheduler"} 1`,
		`vpool_api_request_duration_seconds_count{code="200",route="GET /x"} 1`, `go_goroutines`} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
}

func TestCountErrorIsReported(t *testing.T) {
	m := New()
	m.SetCounter(func(context.Context) (Counts, error) { return Counts{}, errors.New("store down") })
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 500 {
		t.Fatalf("a failing count answered %d, want 500", rec.Code)
	}
}

// TestScrapesShareOneCount: the state gauges cost one count per TTL, not
// one per scrape (a scan of every VM in the server's counter).
func TestScrapesShareOneCount(t *testing.T) {
	m := New()
	now := time.Unix(1e9, 0)
	m.SetCountCache(10*time.Second, func() time.Time { return now })
	var calls atomic.Int64
	m.SetCounter(func(context.Context) (Counts, error) {
		n := calls.Add(1)
		return Counts{VMsByPhase: map[string]int{"running": int(n)}}, nil
	})
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() { defer wg.Done(); scrape(t, m) }()
	}
	wg.Wait()
	if !strings.Contains(scrape(t, m), `vpool_vms{phase="running"} 1`) || calls.Load() != 1 {
		t.Fatalf("21 scrapes within the TTL counted %d times, want 1", calls.Load())
	}
	now = now.Add(10 * time.Second)
	if !strings.Contains(scrape(t, m), `vpool_vms{phase="running"} 2`) || calls.Load() != 2 {
		t.Fatalf("a scrape after the TTL counted %d times in all, want 2", calls.Load())
	}
	// Errors are not cached: the next scrape tries again.
	m.SetCounter(func(context.Context) (Counts, error) { calls.Add(1); return Counts{}, errors.New("store down") })
	for range 2 {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 500 {
			t.Fatalf("a failing count answered %d", rec.Code)
		}
	}
	if calls.Load() != 4 {
		t.Fatalf("failed counts were cached: %d calls, want 4", calls.Load())
	}
}

package metrics

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func scrape(t *testing.T, m *Metrics) string {
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

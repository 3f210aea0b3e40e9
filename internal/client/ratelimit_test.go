package client

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
)

// A 429 is sent again after its Retry-After, body and all: the server
// refused it before acting on it.
func TestRateLimitedIsRetried(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(body), `"name":"alpha"`) {
			t.Errorf("call %d: body %q", calls.Load()+1, body)
		}
		if calls.Add(1) <= 2 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"code":"rate_limited","message":"slow down"}`))
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"name":"alpha"}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL, "t")
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.CreateProject(context.Background(), api.ProjectCreateRequest{Name: "alpha"})
	if err != nil || p.Name != "alpha" || calls.Load() != 3 {
		t.Fatalf("CreateProject = %+v, %v after %d calls; want alpha after 3", p, err, calls.Load())
	}
}

// The retries end: after maxRateRetries, or when the context does.
func TestRateLimitedGivesUp(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"code":"rate_limited","message":"slow down"}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL, "t")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	if _, err := c.GetVM(ctx, "p", "v"); err == nil || !strings.Contains(err.Error(), "rate limited") {
		t.Fatalf("GetVM with a context that ends = %v, want rate limited", err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d calls before the context ended, want 2", n)
	}
}

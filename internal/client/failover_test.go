package client

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vpool/vpool/internal/api"
)

// behaviour is how a fake server treats a request.
type behaviour int

const (
	answer behaviour = iota // 200 with a project
	drop                    // reads the request, then closes the connection unanswered
	busy                    // 503 unavailable
)

// fakeServer counts the requests it sees and treats them as told.
type fakeServer struct {
	hits atomic.Int64
	srv  *httptest.Server
}

func newFakeServer(t *testing.T, b behaviour) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.hits.Add(1)
		switch b {
		case drop:
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case busy:
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"code":"unavailable","message":"store has no quorum"}`))
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"name":"p1"}`))
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// deadAddr is an address that refuses connections.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

// TestFailover: a request goes to the next server only when that cannot
// apply it twice, and the client stays with the server that answered.
func TestFailover(t *testing.T) {
	tests := []struct {
		name      string
		first     behaviour // -1: refuses connections
		post      bool
		wantErr   bool
		wantFirst int64 // requests the first server saw
		wantNext  int64 // requests the second server saw
	}{
		{name: "GET, first refuses", first: -1, wantNext: 1},
		{name: "POST, first refuses: never sent, so resent", first: -1, post: true, wantNext: 1},
		{name: "GET cut off after sending: idempotent, resent", first: drop, wantFirst: 1, wantNext: 1},
		{name: "POST cut off after sending: may have been applied, not resent", first: drop, post: true, wantErr: true, wantFirst: 1},
		{name: "GET answered 503: resent", first: busy, wantFirst: 1, wantNext: 1},
		{name: "POST answered 503: the caller decides", first: busy, post: true, wantErr: true, wantFirst: 1},
		{name: "first answers", first: answer, post: true, wantFirst: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next := newFakeServer(t, answer)
			firstAddr := deadAddr(t)
			var first *fakeServer
			if tc.first >= 0 {
				first = newFakeServer(t, tc.first)
				firstAddr = first.srv.URL
			}
			c, err := New(firstAddr+","+next.srv.URL, "tok")
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if tc.post {
				_, err = c.CreateProject(ctx, api.ProjectCreateRequest{Name: "p1"})
			} else {
				_, err = c.GetProject(ctx, "p1")
			}
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if first != nil && first.hits.Load() != tc.wantFirst {
				t.Errorf("first server saw %d requests, want %d", first.hits.Load(), tc.wantFirst)
			}
			if next.hits.Load() != tc.wantNext {
				t.Errorf("second server saw %d requests, want %d", next.hits.Load(), tc.wantNext)
			}
			if tc.wantNext > 0 {
				// It stays with the server that answered.
				if c.Addr() != next.srv.URL {
					t.Errorf("Addr() = %s, want %s", c.Addr(), next.srv.URL)
				}
				if _, err := c.GetProject(ctx, "p1"); err != nil || next.hits.Load() != tc.wantNext+1 {
					t.Errorf("next request: err %v, second server saw %d, want %d", err, next.hits.Load(), tc.wantNext+1)
				}
			}
		})
	}
}

func TestFailoverAllDown(t *testing.T) {
	c, err := New(deadAddr(t)+","+deadAddr(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetProject(context.Background(), "p1"); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("err = %v, want connection refused", err)
	}
}

func TestServerListAddresses(t *testing.T) {
	tests := []struct {
		addr    string
		want    []string
		wantErr string
	}{
		{addr: "127.0.0.1:1, http://127.0.0.1:2/", want: []string{"http://127.0.0.1:1", "http://127.0.0.1:2"}},
		{addr: "https://a:1,https://b:1", want: []string{"https://a:1", "https://b:1"}},
		{addr: "https://a:1,http://b:1", wantErr: "scheme and path"},
		{addr: "http://a:1/x,http://b:1/y", wantErr: "scheme and path"},
		{addr: " , ", wantErr: "no address"},
	}
	for _, tc := range tests {
		c, err := New(tc.addr, "")
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New(%q) err = %v, want %q", tc.addr, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("New(%q): %v", tc.addr, err)
		}
		if got := c.Servers(); strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("New(%q).Servers() = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

package server

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"
)

// TestAgentConnBytes: an agent's HTTP/2 connection with the agent
// listener's settings holds less than with the defaults once the HPACK
// tables filled (each answer carries a new Date): the server's encoding
// table and the client's decoding one stay at 256 bytes.
func TestAgentConnBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 200 TLS connections")
	}
	tuned, def := agentConnBytes(t, agentHTTP2(), 100), agentConnBytes(t, nil, 100)
	t.Logf("bytes a connection, server and client: %.0f with the agent listener's settings, %.0f with the defaults", tuned, def)
	// the server's encoding and the client's decoding tables shrink:
	// about 9 KiB less a connection
	if def-tuned < 5<<10 {
		t.Fatalf("the agent listener's settings save %.0f bytes a connection, want at least 5 KiB", def-tuned)
	}
}

// BenchmarkAgentConnBytes reports the bytes an idle agent connection
// holds, server and client together (heap only: goroutines' stacks come
// on top),
// with the agent listener's settings and with HTTP/2's defaults.
func BenchmarkAgentConnBytes(b *testing.B) {
	for range b.N {
		b.ReportMetric(agentConnBytes(b, agentHTTP2(), 200), "bytes/conn")
		b.ReportMetric(agentConnBytes(b, nil, 200), "default-bytes/conn")
	}
}

// agentConnBytes opens conns HTTP/2 connections to a TLS server with
// cfg, sends 40 requests on each with headers like an agent's (a path
// with a new revision each time), and returns the server's heap growth
// and the clients' a connection while they are open and idle.
func agentConnBytes(tb testing.TB, cfg *http.HTTP2Config, conns int) float64 {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Revision", r.URL.Query().Get("after"))
		_, _ = io.WriteString(w, `{"revision":1,"vms":[]}`)
	}))
	srv.EnableHTTP2 = true
	srv.Config.HTTP2 = cfg
	srv.StartTLS()
	defer srv.Close()
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	var clients []*http.Client
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	for c := range conns {
		// a transport each: one connection each, as each agent has
		cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true,
			TLSClientConfig: &tls.Config{RootCAs: pool}}}
		clients = append(clients, cl)
		for i := range 40 {
			req, _ := http.NewRequest("GET", fmt.Sprintf("%s/agent/v1/assignments?after=%d&wait=30s&delta=true", srv.URL, 1000000+c*100+i), nil)
			req.Header.Set("Authorization", "Bearer "+fmt.Sprintf("%064d", c))
			req.Header.Set("User-Agent", "vpool-agent/test")
			resp, err := cl.Do(req)
			if err != nil {
				tb.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				tb.Fatalf("HTTP/%d, want 2", resp.ProtoMajor)
			}
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	// the clients live in this process too: this counts both ends (the
	// server's settings bound the client's tables as well)
	grew := float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / float64(conns)
	for _, cl := range clients {
		cl.CloseIdleConnections()
	}
	return grew
}

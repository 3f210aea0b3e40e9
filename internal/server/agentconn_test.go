package server

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
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
	tuned, def := agentConnBytes(t, agentConnSetup{cfg: agentHTTP2()}, 100), agentConnBytes(t, agentConnSetup{}, 100)
	t.Logf("bytes a connection, server and client: %.0f with the agent listener's settings, %.0f with the defaults", tuned, def)
	// the server's encoding and the client's decoding tables shrink:
	// about 9 KiB less a connection
	if def-tuned < 5<<10 {
		t.Fatalf("the agent listener's settings save %.0f bytes a connection, want at least 5 KiB", def-tuned)
	}
}

// TestAgentConnBytesAfterLargeAnswers: an answer larger than a frame (a
// host's first full list of assignments) left the server's HTTP/2
// framer a 16 KiB write buffer for the connection's life, and the
// client's framer a 16 KiB read buffer; the agent listener writes its
// answers in frames of at most agentFrameBytes.
func TestAgentConnBytesAfterLargeAnswers(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 200 TLS connections")
	}
	bounded := agentConnBytes(t, agentConnSetup{cfg: agentHTTP2(), wrap: boundFrames, answer: 40 << 10}, 100)
	whole := agentConnBytes(t, agentConnSetup{cfg: agentHTTP2(), answer: 40 << 10}, 100)
	t.Logf("bytes a connection after 40 KiB answers, server and client: %.0f in frames of %d bytes, %.0f in frames of 16 KiB", bounded, agentFrameBytes, whole)
	// the server's write buffer and the client's read buffer: 2 × 12 KiB
	if whole-bounded < 16<<10 {
		t.Fatalf("frames of %d bytes save %.0f bytes a connection, want at least 16 KiB", agentFrameBytes, whole-bounded)
	}
}

// TestBoundFramesKeepsTheAnswer: an answer written whole or in pieces,
// flushed or not, arrives as written.
func TestBoundFramesKeepsTheAnswer(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 5000)
	for _, tc := range []struct {
		name   string
		writes []int // sizes of the handler's writes, -1 a flush
	}{
		{"one write", []int{len(big)}},
		{"small writes", []int{100, 5000, -1, 3, 70000, 4096, -1}},
		{"exactly a frame", []int{agentFrameBytes, agentFrameBytes}},
		{"empty", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want strings.Builder
			h := boundFrames(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				off := 0
				for _, n := range tc.writes {
					if n < 0 {
						http.NewResponseController(w).Flush()
						continue
					}
					n = min(n, len(big)-off)
					if _, err := w.Write([]byte(big[off : off+n])); err != nil {
						t.Error(err)
					}
					want.WriteString(big[off : off+n])
					off += n
				}
			}))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
			if got := rec.Body.String(); got != want.String() {
				t.Fatalf("answer of %d bytes, want %d", len(got), want.Len())
			}
		})
	}
}

// BenchmarkAgentConnBytes reports the bytes an idle agent connection
// holds, server and client together (heap only: goroutines' stacks come
// on top), with the agent listener's settings and with HTTP/2's
// defaults; and after 40 KiB answers, with and without the listener's
// bound on frames.
func BenchmarkAgentConnBytes(b *testing.B) {
	for range b.N {
		b.ReportMetric(agentConnBytes(b, agentConnSetup{cfg: agentHTTP2()}, 200), "bytes/conn")
		b.ReportMetric(agentConnBytes(b, agentConnSetup{}, 200), "default-bytes/conn")
		b.ReportMetric(agentConnBytes(b, agentConnSetup{cfg: agentHTTP2(), wrap: boundFrames, answer: 40 << 10}, 200), "large-answers-bytes/conn")
		b.ReportMetric(agentConnBytes(b, agentConnSetup{cfg: agentHTTP2(), answer: 40 << 10}, 200), "large-answers-unbounded-bytes/conn")
	}
}

// agentConnSetup is the server side of agentConnBytes.
type agentConnSetup struct {
	cfg    *http.HTTP2Config
	wrap   func(http.Handler) http.Handler // nil: none
	answer int                             // bytes of the answers' padding
}

// agentConnBytes opens conns HTTP/2 connections to a TLS server set up
// as su says, sends 40 requests on each with headers like an agent's (a
// path with a new revision each time), and returns the server's heap
// growth and the clients' a connection while they are open and idle.
func agentConnBytes(tb testing.TB, su agentConnSetup, conns int) float64 {
	pad := strings.Repeat(" ", su.answer)
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Revision", r.URL.Query().Get("after"))
		// one Write, as json.Encoder writes an answer
		_, _ = w.Write([]byte(`{"revision":1,"vms":[]}` + pad))
	})
	if su.wrap != nil {
		h = su.wrap(h)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.Config.HTTP2 = su.cfg
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

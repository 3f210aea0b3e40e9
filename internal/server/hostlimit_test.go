package server

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
)

// A joined host that floods the agent listener is answered 429 with a
// Retry-After once its burst is spent; another host, and the flooding
// host's own heartbeats, are not held up by it.
func TestHostileHostIsRateLimited(t *testing.T) {
	const rate = 5 // a burst of 50, then 5 a second
	ts := startServer(t, nil, func(c *Config) { c.AgentRate = rate })
	bad, good := joinAgent(t, ts, "h1"), joinAgent(t, ts, "h2")
	bad.beat()
	good.beat()
	start := time.Now()
	const sent = 200
	refused := 0
	for range sent {
		code := bad.do("GET", "/agent/v1/power", nil, nil)
		switch code {
		case 200:
		case 429:
			refused++
		default:
			t.Fatalf("power: %d", code)
		}
	}
	// at most the burst plus what refilled while sending went through
	allowed := rate*agentBurstFactor + int(time.Since(start).Seconds()*rate) + 1
	if sent-refused > allowed {
		t.Fatalf("%d of %d requests went through; the limit allows %d", sent-refused, sent, allowed)
	}
	if refused == 0 {
		t.Fatal("no request was refused")
	}
	resp, err := bad.client.Get("https://" + bad.addr + "/agent/v1/power")
	if err != nil {
		t.Fatal(err)
	}
	var e api.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != 429 || e.Code != api.CodeRateLimited || resp.Header.Get("Retry-After") == "" || !strings.Contains(e.Message, "h1") {
		t.Fatalf("over the limit: %d %+v Retry-After %q, want 429 rate_limited naming the host, with Retry-After", resp.StatusCode, e, resp.Header.Get("Retry-After"))
	}
	bad.beat() // its heartbeats have their own bucket: it is not fenced for it
	if code := good.do("GET", "/agent/v1/power", nil, nil); code != 200 {
		t.Fatalf("another host: %d, want 200", code)
	}
}

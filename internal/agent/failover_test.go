package agent_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/pki"
)

// twoServers are two servers of one control plane: one cluster CA.
func twoServers(t *testing.T) (*fakeServer, *fakeServer) {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	var out [2]*fakeServer
	for i := range out {
		cert, err := ca.ServerCert(pki.DefaultServerNames(), now)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = newFakeServerWith(t, ca, cert, nil)
	}
	return out[0], out[1]
}

func beats(fs *fakeServer) int { _, n := fs.lastBeat(); return n }

// An agent given every server joins through one that answers and, when
// the server it talks to goes away, carries on with the next.
func TestAgentFailsOverBetweenServers(t *testing.T) {
	tests := []struct {
		name      string
		firstDown bool // the first server of the list is down from the start
	}{
		{"first server dies later", false},
		{"first server down at the join", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s1, s2 := twoServers(t)
			first := s1.URL()
			if tc.firstDown {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				first = "https://" + l.Addr().String()
				l.Close()
			}
			a, err := agent.New(agent.Config{
				ServerURL: first + "," + s2.URL(), JoinToken: s1.token, StateDir: t.TempDir(), HostName: "h1",
				Driver: sim.MustHost(sim.Config{Name: "h1"}).Driver(), HeartbeatInterval: 50 * time.Millisecond,
				StatusInterval: 100 * time.Millisecond, PollWait: time.Second, StopTimeout: time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })
			if tc.firstDown {
				eventually(t, "beats through the second server", func() bool { return beats(s2) > 2 })
				s2.mu.Lock()
				joins := s2.joins
				s2.mu.Unlock()
				if joins != 1 {
					t.Fatalf("joins through the second server: %d, want 1", joins)
				}
				return
			}
			eventually(t, "beats through the first server", func() bool { return beats(s1) > 2 })
			if beats(s2) != 0 {
				t.Fatalf("the second server got %d beats while the first answered", beats(s2))
			}
			s1.srv.CloseClientConnections()
			s1.srv.Close()
			eventually(t, "beats through the second server", func() bool { return beats(s2) > 2 })
		})
	}
}

// A server that stalls (it keeps the connection but never answers: its
// store waits for a quorum, its process is stopped) costs the agent a
// quarter of the fence timeout per heartbeat: the beat goes on to the
// next server, and the agent never fences itself. Without a deadline per
// server the heartbeat waited on the stalled one until the agent fenced.
func TestHeartbeatLeavesAStalledServer(t *testing.T) {
	s1, s2 := twoServers(t)
	const fence = 4000 // ms: a second per server
	s1.setHeartbeats(false, fence)
	s2.setHeartbeats(false, fence)
	a, err := agent.New(agent.Config{
		ServerURL: s1.URL() + "," + s2.URL(), JoinToken: s1.token, StateDir: t.TempDir(), HostName: "h1",
		Driver: sim.MustHost(sim.Config{Name: "h1"}).Driver(), HeartbeatInterval: 100 * time.Millisecond,
		StatusInterval: 100 * time.Millisecond, PollWait: time.Second, StopTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stall := make(chan struct{})
	t.Cleanup(func() { close(stall); cancel(); <-done })
	eventually(t, "beats through the first server", func() bool { return beats(s1) > 2 })
	s1.mu.Lock()
	s1.hbStall = stall
	s1.mu.Unlock()
	eventually(t, "beats through the second server", func() bool { return beats(s2) > 2 })
	n := beats(s2)
	time.Sleep(fence * time.Millisecond) // beats for a whole fence timeout
	if beats(s2) <= n {
		t.Fatalf("no beat reached the second server after the first stalled")
	}
	if fenced, count := a.Fenced(); fenced || count > 0 {
		t.Fatalf("the agent fenced itself (%d times) while a server answered", count)
	}
}

func TestServerList(t *testing.T) {
	d := sim.MustHost(sim.Config{Name: "h1"}).Driver()
	for _, list := range []string{"", " , ", "http://a:1", "https://a:1,ftp://b:2", "https://a:1/x"} {
		if _, err := agent.New(agent.Config{ServerURL: list, StateDir: t.TempDir(), HostName: "h1", Driver: d}); err == nil {
			t.Errorf("ServerURL %q accepted", list)
		}
	}
	if _, err := agent.New(agent.Config{ServerURL: "https://a:1, https://b:2/", StateDir: t.TempDir(), HostName: "h1", Driver: d}); err != nil {
		t.Errorf("a list of two: %v", err)
	}
}

package browser

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
	"github.com/vpool/vpool/web"
)

// simHost is one simulated host of the test cluster.
type simHost struct {
	name   string
	cpus   int
	memory model.Bytes
	labels map[string]string
}

// cluster is a control plane (API server and controllers on memstore),
// simulated hosts joined over real mutual TLS, and the dashboard served
// beside the API at URL.
type cluster struct {
	URL    string // the dashboard's origin: /ui/ and /api/v1 both live here
	Token  string // admin bearer token
	Client *client.Client
}

// startCluster runs the cluster until the test ends. The server does not
// mount the dashboard itself yet, so the test puts both behind one mux, as
// the server will: /ui/ (and /) from web.Handler, the rest from the API.
func startCluster(t *testing.T, hosts []simHost) *cluster {
	t.Helper()
	return startClusterWith(t, hosts, nil)
}

// startClusterWith is startCluster with the server's config tuned by edit.
func startClusterWith(t *testing.T, hosts []simHost, edit func(*devenv.ServerConfig)) *cluster {
	t.Helper()
	st := memstore.New()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := devenv.ServerConfig{
		Store: st, Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", DataDir: t.TempDir(), Version: "browser-test",
	}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := devenv.StartServer(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Run(ctx) }()

	var agentsDone []chan struct{}
	t.Cleanup(func() {
		cancel() // stops the agents and the server
		for _, d := range agentsDone {
			<-d
		}
		if err := <-srvDone; err != nil {
			t.Errorf("server Run: %v", err)
		}
		_ = st.Close()
	})

	join, err := srv.NewJoinToken(ctx, time.Hour, len(hosts))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	reg := sim.NewRegistry() // the hosts migrate VMs to one another
	for _, h := range hosts {
		a, err := agent.New(agent.Config{
			ServerURL: srv.AgentURL(), JoinToken: join.Token, StateDir: filepath.Join(dir, h.name), HostName: h.name,
			Labels: h.labels, Driver: sim.MustHost(sim.Config{Name: h.name, CPUs: h.cpus, Memory: h.memory, Registry: reg}).Driver(),
			StatusInterval: 200 * time.Millisecond, PollWait: 5 * time.Second, StopTimeout: time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		agentsDone = append(agentsDone, done)
		go func() {
			defer close(done)
			if err := a.Run(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("agent %s: %v", h.name, err)
			}
		}()
	}

	mux := http.NewServeMux()
	ui := web.Handler()
	mux.Handle(web.Prefix, ui)
	mux.Handle("GET /{$}", ui)
	mux.Handle("/", srv.Handler())
	front := httptest.NewServer(mux)
	t.Cleanup(func() {
		front.CloseClientConnections() // the browser's event stream
		front.Close()
	})

	c, err := client.New(front.URL, srv.AdminToken())
	if err != nil {
		t.Fatal(err)
	}
	cl := &cluster{URL: front.URL, Token: srv.AdminToken(), Client: c}
	eventually(t, fmt.Sprintf("%d hosts ready", len(hosts)), func() bool {
		hs, err := c.ListHosts(context.Background())
		ready := 0
		for _, h := range hs {
			if h.State == model.HostReady {
				ready++
			}
		}
		return err == nil && ready == len(hosts)
	})
	return cl
}

// eventually polls cond until it holds, failing the test after 15s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

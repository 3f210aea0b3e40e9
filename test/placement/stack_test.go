package placement

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/server"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// stack is a control-plane node wired as internal/devenv wires it: API
// server, the controllers under leader election (scheduling with the
// real scheduler), and the dry-run Placer, over one store.
type stack struct {
	srv    *server.Server
	st     store.Store
	repo   *state.Repo
	client *client.Client
	addr   string
	admin  string
}

// startEtcd starts an embedded etcd member in a temp dir. fsync stays on
// unless fast (the benchmark measures the real thing).
func startEtcd(tb testing.TB, fast bool) store.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := etcdstore.Config{DataDir: tb.TempDir()}
	if fast {
		cfg.UnsafeNoFsync = true
		cfg.HeartbeatInterval = 10 * time.Millisecond
		cfg.ElectionTimeout = 100 * time.Millisecond
	}
	s, err := etcdstore.StartEmbedded(ctx, cfg)
	if err != nil {
		tb.Fatalf("embedded etcd: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// startStack runs a node over st until the test ends. Hosts are seeded
// without agents, so liveness gives them an hour of grace.
func startStack(tb testing.TB, st store.Store) *stack {
	tb.Helper()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("VPOOL_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	mgr := controller.New(controller.Config{
		Store: st, Identity: "server-1", Placer: controller.NewSchedulerPlacer(), Logger: log,
		ResyncInterval: 200 * time.Millisecond, HostDownGrace: time.Hour, LeaseTTL: 2 * time.Second,
	})
	srv, err := server.New(server.Config{
		Store: st, StoreKind: "embedded", Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0",
		DataDir: tb.TempDir(), Version: "test", ServerNames: []string{"127.0.0.1"},
		Controllers: mgr.Run,
		Placer:      controller.NewDryRunner(st, nil, nil), // as internal/devenv/server.go wires it
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("server: %v", err)
		}
	})
	addr := "http://" + srv.Addr()
	c, err := client.New(addr, srv.AdminToken())
	if err != nil {
		tb.Fatal(err)
	}
	return &stack{srv: srv, st: st, repo: srv.Repo(), client: c, addr: addr, admin: srv.AdminToken()}
}

package server

import (
	"context"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// startEtcd starts an embedded etcd member in a temp dir. fsync stays on
// unless fast: the benchmarks measure the real thing.
func startEtcd(tb testing.TB, fast bool) store.Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
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

// TestOnEmbeddedEtcd runs the quota race, the agent protocol and the
// lifecycle against a real embedded etcd.
func TestOnEmbeddedEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	st := startEtcd(t, true)
	ts := startServer(t, st)
	t.Run("quota race", func(t *testing.T) { runQuotaRace(t, ts) })
	t.Run("agent", func(t *testing.T) {
		admin := ts.AdminToken()
		a := joinAgent(t, ts, "etcd-h1")
		a.beat()
		if _, err := st.Get(context.Background(), store.AliveKey("etcd-h1")); err != nil {
			t.Fatalf("no alive key on etcd: %v", err)
		}
		a.beat() // keep-alive path
		ts.mustCall(201, "POST", "/api/v1/vms", admin, vmReq("e1"), nil)
		if _, err := ts.Repo().UpdateVM(context.Background(), "default", "e1", func(v *model.VM) error {
			v.Status.Host, v.Status.Phase = "etcd-h1", model.PhaseCreating
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		var as api.Assignments
		a.do("GET", "/agent/v1/assignments", nil, &as)
		got := make(chan api.Assignments, 1)
		go func() {
			var next api.Assignments
			a.do("GET", "/agent/v1/assignments?after="+itoa(as.Revision)+"&wait=30s", nil, &next)
			got <- next
		}()
		var vm model.VM
		if code := a.do("PUT", "/agent/v1/vms/default/e1/status", api.VMReport{Phase: model.PhaseRunning}, &vm); code != 200 || vm.Status.Phase != model.PhaseRunning {
			t.Fatalf("status on etcd: %d %+v", code, vm.Status)
		}
		if next := <-got; len(next.VMs) != 1 || next.VMs[0].Status.Phase != model.PhaseRunning {
			t.Fatalf("long poll on etcd: %+v", next)
		}
		ts.mustCall(202, "DELETE", "/api/v1/vms/e1", admin, nil, nil)
		if code := a.do("PUT", "/agent/v1/vms/default/e1/status", api.VMReport{Gone: true}, nil); code != 204 {
			t.Fatalf("gone on etcd: %d", code)
		}
		ts.mustCall(404, "GET", "/api/v1/vms/e1", admin, nil, nil)
	})
	t.Run("second server agrees", func(t *testing.T) {
		b := startServer(t, st)
		if b.CAHash() != ts.CAHash() {
			t.Fatal("two servers on one etcd made two CAs")
		}
	})
}

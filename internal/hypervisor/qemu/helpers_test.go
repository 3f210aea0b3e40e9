package qemu

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
)

// heavy marks a test that boots real QEMU: it needs the guest (skipping
// with the reason when QEMU is absent, failing under VPOOL_REQUIRE_HEAVY)
// and one of the machine-wide QEMU test slots (at most two at once).
func heavy(t testing.TB) guest.Guest {
	t.Helper()
	g := guest.Require(t)
	guest.AcquireSlot(t)
	return g
}

// shortTempDir is a temp dir with a short path, so sockets fit in
// sockaddr_un without the RunDir fallback.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "vpq")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("VPOOL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig is the tests' driver configuration. VPOOL_TEST_QEMU names
// another QEMU binary, e.g. a wrapper that adds trace options (how the
// console lag was looked at: docs/migration-slo.md).
func testConfig(t testing.TB, dir string) Config {
	return Config{StateDir: dir, Network: NetUser, Accel: "auto", Logger: testLogger(t), LUKSIterTime: 50 * time.Millisecond,
		QEMU: os.Getenv("VPOOL_TEST_QEMU")}
}

// newDriver makes a driver on a fresh state dir; at the end of the test
// it deletes what is left and closes.
func newDriver(t testing.TB, cfg Config) *Driver {
	t.Helper()
	if cfg.StateDir == "" {
		cfg.StateDir = shortTempDir(t)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		d.mu.Lock() // every VM, incoming ones too (List leaves them out)
		ids := make([]string, 0, len(d.vms))
		for id := range d.vms {
			ids = append(ids, id)
		}
		d.mu.Unlock()
		for _, id := range ids {
			d.Delete(ctx, id)
		}
		d.Close()
	})
	return d
}

func vmConfig(g guest.Guest, name string, extra ...string) hypervisor.VMConfig {
	return hypervisor.VMConfig{
		ID: "test." + name, Name: name, Project: "test", UID: "uid-" + name,
		Spec: model.VMSpec{
			VCPUs: 1, Memory: 128 * model.MiB,
			Disks: []model.Disk{{Name: "root", Size: model.GiB}},
			Power: model.PowerRunning,
		},
		Image: g.Image(extra...),
	}
}

// waitReady waits for the guest's ready marker in this boot's serial log.
func waitReady(t testing.TB, d *Driver, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	line, err := guest.WaitFor(ctx, d.SerialLog(id), guest.ReadyMarker)
	if err != nil {
		b, _ := os.ReadFile(d.SerialLog(id))
		q, _ := os.ReadFile(filepath.Join(d.vmDir(id), "qemu.log"))
		t.Fatalf("%v\nserial.log tail: %s\nqemu.log: %s", err, tail(string(b), 1500), tail(string(q), 1500))
	}
	return line
}

func tail(s string, n int) string {
	if len(s) > n {
		s = s[len(s)-n:]
	}
	return strings.TrimSpace(s)
}

func mustDo(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func state(t testing.TB, d *Driver, id string) hypervisor.State {
	t.Helper()
	infos, err := d.List(context.Background())
	mustDo(t, "List", err)
	for _, in := range infos {
		if in.ID == id {
			return in.State
		}
	}
	return ""
}

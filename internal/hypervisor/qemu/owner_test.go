package qemu

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
)

// TestSharedPoolSameStateDir runs two hosts' drivers with the same
// state-dir path and one shared pool, as an operator who mounts the pool
// at the same path everywhere and keeps the default --state-dir would:
// the second host's start-up must leave the first host's disks alone, and
// its shared-disk lookup must read them as the first host's. The hosts
// take turns on one machine: the first host's state dir is moved aside
// while the second runs on the same path.
func TestSharedPoolSameStateDir(t *testing.T) {
	g := guest.Require(t)
	ctx := context.Background()
	stateDir := filepath.Join(shortTempDir(t), "state") // the same path on both hosts
	pool := shortTempDir(t)
	cfgFor := func(host string, logs *syncBuffer) Config {
		c := testConfig(t, stateDir)
		c.HostID = host
		c.Pools = map[string]string{"shared": pool}
		if logs != nil {
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		}
		return c
	}
	onShared := func(name string) hypervisor.VMConfig {
		c := vmConfig(g, name)
		c.Spec.Disks = []model.Disk{{Name: "root", Size: 64 * model.MiB, Pool: "shared"}}
		return c
	}
	web, db := onShared("web"), onShared("db")

	// Host a creates two VMs whose disks are on the shared pool.
	a, err := New(cfgFor("host-a", nil))
	mustDo(t, "New a", err)
	for _, c := range []hypervisor.VMConfig{web, db} {
		mustDo(t, "Create "+c.ID, a.Create(ctx, c))
	}
	webFile := filepath.Join(pool, web.ID, "root.0.qcow2")
	a.Close()
	mustDo(t, "move a's state aside", os.Rename(stateDir, stateDir+".a"))

	// Host b starts on the same state-dir path: a's disks stay.
	var logs syncBuffer
	b, err := New(cfgFor("host-b", &logs))
	mustDo(t, "New b", err)
	for _, c := range []hypervisor.VMConfig{web, db} {
		if _, err := os.Stat(filepath.Join(pool, c.ID, "root.0.qcow2")); err != nil {
			t.Fatalf("host b's start-up removed host a's disk of %s: %v", c.ID, err)
		}
	}
	// The migration lookup reads web's disk as host a's (shared), and a
	// plain create of the same VM on b refuses to write over it.
	shared, err := b.findSharedDisks(ctx, web)
	mustDo(t, "findSharedDisks", err)
	if dr, ok := shared[0]; !ok || dr.Layers[0].File != webFile {
		t.Fatalf("shared-disk lookup on host b = %+v, want %s as host a's", shared, webFile)
	}
	before, _ := os.Stat(webFile)
	if err := b.Create(ctx, web); !errors.Is(err, hypervisor.ErrBadState) {
		t.Fatalf("Create over host a's disk on host b = %v, want ErrBadState", err)
	}
	if after, err := os.Stat(webFile); err != nil || !after.ModTime().Equal(before.ModTime()) {
		t.Fatalf("Create on host b touched host a's disk: %v", err)
	}

	// An orphan of host b's own on the shared pool is reported, not
	// deleted, at b's next start.
	tmp := onShared("tmp")
	mustDo(t, "Create tmp", b.Create(ctx, tmp))
	mustDo(t, "lose tmp's record", os.RemoveAll(b.vmDir(tmp.ID)))
	b.Close()
	b, err = New(cfgFor("host-b", &logs))
	mustDo(t, "New b again", err)
	if _, err := os.Stat(filepath.Join(pool, tmp.ID, "root.0.qcow2")); err != nil {
		t.Fatalf("host b deleted its orphan on the shared pool at start-up: %v", err)
	}
	if !strings.Contains(logs.String(), "orphan disk directory on a shared pool") {
		t.Errorf("the orphan on the shared pool was not reported:\n%s", logs.String())
	}
	b.Close()

	// Host a comes back: its VMs and disks are whole, and a deletion the
	// control plane orders removes its own directory only.
	mustDo(t, "move b's state aside", os.Rename(stateDir, stateDir+".b"))
	mustDo(t, "bring a's state back", os.Rename(stateDir+".a", stateDir))
	a = newDriver(t, cfgFor("host-a", nil))
	infos, err := a.List(ctx)
	mustDo(t, "List a", err)
	if len(infos) != 2 {
		t.Fatalf("host a lists %d VMs, want 2: %+v", len(infos), infos)
	}
	mustDo(t, "Delete web", a.Delete(ctx, web.ID))
	if _, err := os.Stat(filepath.Join(pool, web.ID)); !os.IsNotExist(err) {
		t.Errorf("Delete on the owner left %s: %v", web.ID, err)
	}
	for _, id := range []string{db.ID, tmp.ID} {
		if _, err := os.Stat(filepath.Join(pool, id)); err != nil {
			t.Errorf("deleting %s on host a touched %s: %v", web.ID, id, err)
		}
	}
}

func TestOwnerRecords(t *testing.T) {
	state := "/var/lib/vpool-agent/qemu"
	d := &Driver{cfg: Config{StateDir: state}, hostID: "h1"}
	tests := []struct {
		name  string
		file  string // owner file contents; "" for none
		pool  string
		vm    string
		owns  bool
		isErr bool
	}{
		{"no owner file", "", "/mnt/shared", "p.a", true, false},
		{"this host and VM", `{"host":"h1","vm":"p.a","epoch":1}`, "/mnt/shared", "p.a", true, false},
		{"this host, another VM", `{"host":"h1","vm":"p.b","epoch":1}`, "/mnt/shared", "p.a", false, false},
		{"another host", `{"host":"h2","vm":"p.a","epoch":3}`, "/mnt/shared", "p.a", false, false},
		{"legacy path, local pool", state + "\n", state + "/pools/default", "p.a", true, false},
		{"legacy path, shared pool", state + "\n", "/mnt/shared", "p.a", false, false},
		{"corrupt", `{"host":`, "/mnt/shared", "p.a", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.file != "" {
				os.WriteFile(filepath.Join(dir, ownerFile), []byte(tt.file), 0o600)
			}
			o, ok, err := readOwner(dir)
			if (err != nil) != tt.isErr {
				t.Fatalf("readOwner: %v", err)
			}
			if err != nil {
				return
			}
			got := !ok || d.mine(o, tt.vm, d.localPool(tt.pool))
			if got != tt.owns {
				t.Fatalf("owns = %v, want %v (owner %+v)", got, tt.owns, o)
			}
		})
	}
}

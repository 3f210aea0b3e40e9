package qemu

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/testenv"
)

// An image base that VM users cannot read in place is copied under
// StateDir/images once for the VMs that use it; the copy goes with the
// last of them, and a driver that starts removes every copy no record
// names (those left by VMs deleted before copies were counted).
func TestImageCopiesGoWithTheirLastVM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("per-VM users (and so image copies) need root")
	}
	qimg := testenv.MustHaveTool(t, "qemu-img", "apt-get install qemu-utils")
	closed := t.TempDir() // 0700: VM users cannot read in it
	base := filepath.Join(closed, "base.qcow2")
	if out, err := exec.Command(qimg, "create", "-q", "-f", "qcow2", base, "16M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	cfg := testConfig(t, shortTempDir(t))
	d := newDriver(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vc := func(name string) hypervisor.VMConfig {
		return hypervisor.VMConfig{ID: "test." + name, Name: name, Project: "test", UID: "uid-" + name,
			Spec:  model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB, Disks: []model.Disk{{Name: "root", Size: 32 * model.MiB}}},
			Image: &hypervisor.Image{Name: "closed", Disk: base, Format: "qcow2"}}
	}
	copies := func() []string {
		t.Helper()
		m, _ := filepath.Glob(filepath.Join(d.imagesDir(), "*"))
		return m
	}
	mustDo(t, "Create a", d.Create(ctx, vc("a")))
	mustDo(t, "Create b", d.Create(ctx, vc("b")))
	got := copies()
	if len(got) != 1 {
		t.Fatalf("copies after two VMs of one base: %v, want one", got)
	}
	copyPath := got[0]
	va, _ := d.get("test.a")
	if va.rec.Disks[0].Base != copyPath {
		t.Fatalf("the disk backs onto %s, not the copy %s", va.rec.Disks[0].Base, copyPath)
	}

	mustDo(t, "Delete a", d.Delete(ctx, "test.a"))
	if _, err := os.Stat(copyPath); err != nil {
		t.Fatalf("the copy went while VM b backs onto it: %v", err)
	}

	// a new driver over the same state dir keeps b's copy and removes a
	// leftover nobody names
	leftover := filepath.Join(d.imagesDir(), "0123456789abcdef01234567-old.qcow2")
	mustDo(t, "write leftover", os.WriteFile(leftover, []byte("old"), 0o644))
	d.Close()
	d = newDriver(t, cfg)
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a copy no record names survived the driver's start: %v", err)
	}
	if _, err := os.Stat(copyPath); err != nil {
		t.Fatalf("the copy VM b backs onto went at the driver's start: %v", err)
	}

	mustDo(t, "Delete b", d.Delete(ctx, "test.b"))
	if got := copies(); len(got) != 0 {
		t.Fatalf("copies once no VM uses them: %v", got)
	}
	// a Create that fails after taking the copy leaves none behind
	bad := vc("c")
	bad.Spec.Disks = append(bad.Spec.Disks, model.Disk{Name: "data", Size: model.MiB, Pool: "no-such-pool"})
	if err := d.Create(ctx, bad); err == nil {
		t.Fatal("a VM on a pool that does not exist was created")
	}
	if got := copies(); len(got) != 0 {
		t.Fatalf("copies after a failed create: %v", got)
	}
}

package backup

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/testenv"
)

const chunk = 256 << 10

type fixture struct {
	t   *testing.T
	ctx context.Context
	d   *sim.Driver
	r   *repo.Repo
	rng *rand.Rand
	// disks shadows what was written to each VM's disk.
	disks map[string][]byte
}

func newFixture(t *testing.T, root string) *fixture {
	t.Helper()
	h, err := sim.NewHost(sim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if root == "" {
		root = t.TempDir()
	}
	r, err := repo.Create(context.Background(), &repo.Dir{Root: root}, repo.Options{Key: repo.GenerateKey(), Cluster: "c1", ChunkSize: chunk})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, ctx: context.Background(), d: h.Driver(), r: r, rng: rand.New(rand.NewPCG(1, 2)), disks: map[string][]byte{}}
}

func (f *fixture) vm(name string, size model.Bytes) string {
	f.t.Helper()
	cfg := hypervisor.VMConfig{ID: "p." + name, Name: name, Project: "p",
		Spec: model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB, Disks: []model.Disk{{Name: "root", Size: size}}}}
	if err := f.d.Create(f.ctx, cfg); err != nil {
		f.t.Fatal(err)
	}
	f.disks[cfg.ID] = make([]byte, size)
	return cfg.ID
}

// write puts n random bytes at off and returns them.
func (f *fixture) write(id string, off int64, n int) []byte {
	f.t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(f.rng.Uint32())
	}
	if err := f.d.WriteDisk(f.ctx, id, "root", off, b); err != nil {
		f.t.Fatal(err)
	}
	copy(f.disks[id][off:], b)
	return b
}

func (f *fixture) backup(id, bid string, parent *repo.Manifest) (*repo.Manifest, error) {
	return Backup(f.ctx, f.d, id, f.r, Job{ID: bid, Project: "p", VM: id, Parent: parent})
}

// image reads a whole disk through a full backup session (it drops the
// VM's change tracking: only for restored VMs).
func (f *fixture) image(id string, size int64) []byte {
	f.t.Helper()
	s, err := f.d.OpenBackup(f.ctx, id, hypervisor.BackupRequest{Checkpoint: "read"})
	if err != nil {
		f.t.Fatal(err)
	}
	defer s.Close(f.ctx, false)
	out := make([]byte, size)
	if err := s.ReadAt(f.ctx, "root", out, 0); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func TestFullIncrementalRestore(t *testing.T) {
	f := newFixture(t, "")
	const size = 16 << 20
	id := f.vm("src", size)
	f.write(id, 0, 3<<20)
	f.write(id, 10<<20, 100<<10)
	full, err := f.backup(id, "b1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if full.Kind != "full" || full.Stats.ReadBytes < 3<<20+100<<10 || full.Stats.ReadBytes > 4<<20 {
		t.Fatalf("full backup %+v", full.Stats)
	}
	want1 := bytes.Clone(f.disks[id])
	// 5 % of the disk changes, in small writes spread over it.
	var changed int64
	for i := 0; i < 13; i++ {
		off := int64(f.rng.IntN(size/(64<<10))) * 64 << 10
		f.write(id, off, 64<<10)
		changed += 64 << 10
	}
	inc, err := f.backup(id, "b2", full)
	if err != nil {
		t.Fatal(err)
	}
	if inc.Kind != "incremental" || inc.Parent != "b1" {
		t.Fatalf("second backup is %s of %q", inc.Kind, inc.Parent)
	}
	if inc.Stats.ReadBytes > 2*changed {
		t.Fatalf("incremental read %d bytes for %d changed (more than 2×)", inc.Stats.ReadBytes, changed)
	}
	want2 := bytes.Clone(f.disks[id])
	for _, tc := range []struct {
		m    *repo.Manifest
		want []byte
	}{{full, want1}, {inc, want2}} {
		dst := f.vm("dst-"+tc.m.ID, size)
		f.write(dst, 5<<20, 1<<20) // garbage the restore must overwrite
		st, err := Restore(f.ctx, f.d, dst, f.r, tc.m, nil)
		if err != nil {
			t.Fatal(err)
		}
		if st.Bytes != size {
			t.Fatalf("restore of %s covered %d of %d bytes", tc.m.ID, st.Bytes, size)
		}
		if got := f.image(dst, size); !bytes.Equal(got, tc.want) {
			t.Fatalf("restore of %s differs from the disk at its point", tc.m.ID)
		}
	}
	if v, err := f.r.Verify(f.ctx, nil, nil); err != nil || !v.OK() {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

func TestClonesDedupe(t *testing.T) {
	f := newFixture(t, "")
	const size = 16 << 20
	a, b := f.vm("a", size), f.vm("b", size)
	img := f.write(a, 0, 8<<20)
	if err := f.d.WriteDisk(f.ctx, b, "root", 0, img); err != nil {
		t.Fatal(err)
	}
	f.write(b, 12<<20, 64<<10) // the clone's own change
	ma, err := f.backup(a, "ba", nil)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := f.backup(b, "bb", nil)
	if err != nil {
		t.Fatal(err)
	}
	if mb.Stats.NewBytes*10 > ma.Stats.NewBytes {
		t.Fatalf("the clone cost %d bytes, the first %d: not < 10%%", mb.Stats.NewBytes, ma.Stats.NewBytes)
	}
}

// A backup that dies half-way (the agent killed: its context ends) lists
// nothing, leaves the repository consistent, and the next backup covers
// every change since the last complete one.
func TestInterruptedBackupLeavesNothingAndNextCovers(t *testing.T) {
	f := newFixture(t, "")
	const size = 16 << 20
	id := f.vm("src", size)
	f.write(id, 0, 2<<20)
	full, err := f.backup(id, "b1", nil)
	if err != nil {
		t.Fatal(err)
	}
	f.write(id, 4<<20, 2<<20)
	ctx, cancel := context.WithCancel(f.ctx)
	_, err = Backup(ctx, f.d, id, f.r, Job{ID: "b2", Parent: full, Progress: func(p Progress) {
		if p.Done > 0 {
			cancel()
		}
	}})
	if err == nil {
		t.Fatal("a cancelled backup succeeded")
	}
	if ids, _ := f.r.ListIDs(f.ctx); len(ids) != 1 {
		t.Fatalf("listed %v after an interrupted backup", ids)
	}
	if v, err := f.r.Verify(f.ctx, nil, nil); err != nil || !v.OK() {
		t.Fatalf("verify: %+v %v", v, err)
	}
	next, err := f.backup(id, "b3", full)
	if err != nil {
		t.Fatal(err)
	}
	if next.Kind != "incremental" || next.Stats.ReadBytes < 2<<20 {
		t.Fatalf("next backup %s read %d bytes; the 2 MiB written before the failure must be in it", next.Kind, next.Stats.ReadBytes)
	}
}

func TestWrongKeyAndGCDuringBackup(t *testing.T) {
	f := newFixture(t, "")
	id := f.vm("src", 4<<20)
	f.write(id, 0, 1<<20)
	if _, err := repo.Open(f.ctx, f.r.Backend(), repo.Options{Key: repo.GenerateKey(), Cluster: "c1"}); !errors.Is(err, repo.ErrWrongKey) {
		t.Fatalf("wrong key: %v", err)
	}
	l, err := f.r.LockExclusive(f.ctx, "gc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.backup(id, "b1", nil); !errors.Is(err, repo.ErrBusy) {
		t.Fatalf("backup during GC: %v", err)
	}
	l.Release(f.ctx)
	if _, err := f.backup(id, "b1", nil); err != nil {
		t.Fatalf("backup after GC: %v", err)
	}
}

// A repository on a full file system: the backup fails with ErrFull,
// nothing is listed, earlier backups still verify and restore.
func TestRepositoryFull(t *testing.T) {
	testenv.MustHaveRoot(t, "mounting a small tmpfs")
	dir := t.TempDir()
	mnt := filepath.Join(dir, "repo")
	os.Mkdir(mnt, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt).CombinedOutput(); err != nil {
		testenv.SkipOrFail(t, "mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	f := newFixture(t, mnt)
	id := f.vm("src", 16<<20)
	f.write(id, 0, 1<<20)
	first, err := f.backup(id, "b1", nil)
	if err != nil {
		t.Fatal(err)
	}
	f.write(id, 4<<20, 6<<20) // random data does not compress: more than fits
	_, err = f.backup(id, "b2", first)
	if !errors.Is(err, repo.ErrFull) {
		t.Fatalf("backup into a full repository: %v, want ErrFull", err)
	}
	if ids, _ := f.r.ListIDs(f.ctx); len(ids) != 1 {
		t.Fatalf("listed %v", ids)
	}
	if v, err := f.r.Verify(f.ctx, nil, nil); err != nil || !v.OK() {
		t.Fatalf("verify after the failure: %+v %v", v, err)
	}
	dst := f.vm("dst", 16<<20)
	if _, err := Restore(f.ctx, f.d, dst, f.r, first, nil); err != nil {
		t.Fatalf("restore after the failure: %v", err)
	}
}

package repo

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func testRepo(t *testing.T, mk newBackend, key []byte) (*Repo, Backend) {
	t.Helper()
	be := mk(t)
	r, err := Create(context.Background(), be, Options{Key: key, Cluster: "c1", ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	return r, be
}

func randData(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// backup writes one backup of the given chunks and commits it.
func backup(t *testing.T, r *Repo, id string, chunks ...[]byte) *Manifest {
	t.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Project: "p", VM: "v", Kind: "full", CreatedAt: time.Now()}
	d := DiskIndex{Name: "root", Size: int64(len(chunks)) * 64 << 10}
	for _, c := range chunks {
		cid, _, err := w.Put(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		d.Chunks = append(d.Chunks, cid)
	}
	m.Disks = []DiskIndex{d}
	if err := w.Commit(ctx, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestOpenChecksKeyAndCluster(t *testing.T) { forBackends(t, testOpenChecksKeyAndCluster) }

func testOpenChecksKeyAndCluster(t *testing.T, mk newBackend) {
	key := GenerateKey()
	_, be := testRepo(t, mk, key)
	ctx := context.Background()
	tests := []struct {
		name string
		opts Options
		want error
	}{
		{"right key", Options{Key: key, Cluster: "c1"}, nil},
		{"wrong key", Options{Key: GenerateKey(), Cluster: "c1"}, ErrWrongKey},
		{"other cluster writing", Options{Key: key, Cluster: "c2"}, ErrForeign},
		{"other cluster reading", Options{Key: key, Cluster: "c2", ReadOnly: true}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(ctx, be, tc.opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := Open(ctx, mk(t), Options{Key: key, Cluster: "c1"}); !errors.Is(err, ErrNotRepo) {
		t.Fatalf("empty backend: %v", err)
	}
	if _, err := Create(ctx, be, Options{Key: key, Cluster: "c1"}); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	// An altered config (another cluster's name) no longer opens.
	cfg, _ := ReadConfig(ctx, be)
	b, _ := be.Get(ctx, configName)
	if err := be.Put(ctx, configName, bytes.Replace(b, []byte(`"cluster": "c1"`), []byte(`"cluster": "c9"`), 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, be, Options{Key: key, Cluster: "c9"}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("altered config of %s: %v", cfg.ID, err)
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	k := GenerateKey()
	got, err := ParseKey([]byte("  " + FormatKey(k) + "\n"))
	if err != nil || !bytes.Equal(got, k) {
		t.Fatalf("ParseKey: %v", err)
	}
	for _, bad := range []string{"", "hello", keyPrefix + "!!!", keyPrefix + "AAAA"} {
		_, err := ParseKey([]byte(bad))
		if err == nil {
			t.Fatalf("ParseKey(%q) accepted it", bad)
		}
		if secret := strings.TrimPrefix(bad, keyPrefix); secret != "" && strings.Contains(err.Error(), secret) {
			t.Fatalf("ParseKey(%q) = %v: the error shows the key", bad, err)
		}
	}
}

func TestChunksDedupeAndNamesHideContent(t *testing.T) {
	forBackends(t, testChunksDedupeAndNamesHideContent)
}

func testChunksDedupeAndNamesHideContent(t *testing.T, mk newBackend) {
	r, be := testRepo(t, mk, GenerateKey())
	a, b := randData(1, 64<<10), bytes.Repeat([]byte("vpool"), 64<<10/5)
	backup(t, r, "b1", a, b, make([]byte, 64<<10))
	m2 := backup(t, r, "b2", b, a)
	blobs, _ := be.List(context.Background(), "chunks")
	if len(blobs) != 2 {
		t.Fatalf("%d chunk blobs, want 2 (dedup, zero chunk not stored)", len(blobs))
	}
	for _, bl := range blobs {
		raw, _ := be.Get(context.Background(), bl.Name)
		if bytes.Contains(raw, []byte("vpoolvpool")) {
			t.Fatal("a chunk blob holds plaintext")
		}
	}
	// The same data under another key gets another name.
	r2, _ := testRepo(t, mk, GenerateKey())
	if r2.ChunkID(a) == r.ChunkID(a) {
		t.Fatal("chunk names do not depend on the key")
	}
	got, err := r.ReadChunk(context.Background(), m2.Disks[0].Chunks[1])
	if err != nil || !bytes.Equal(got, a) {
		t.Fatalf("ReadChunk: %v", err)
	}
	ms, bad, err := r.Catalog(context.Background())
	if err != nil || len(ms) != 2 || len(bad) != 0 {
		t.Fatalf("catalog: %d %v %v", len(ms), bad, err)
	}
}

func TestVerifyNamesCorruptChunkAndItsBackups(t *testing.T) {
	forBackends(t, testVerifyNamesCorruptChunkAndItsBackups)
}

func testVerifyNamesCorruptChunkAndItsBackups(t *testing.T, mk newBackend) {
	r, be := testRepo(t, mk, GenerateKey())
	a, b, c := randData(1, 64<<10), randData(2, 64<<10), randData(3, 64<<10)
	backup(t, r, "b1", a, b)
	backup(t, r, "b2", b, c)
	backup(t, r, "b3", c)
	ctx := context.Background()
	rep, err := r.Verify(ctx, nil, nil)
	if err != nil || !rep.OK() || rep.Chunks != 3 || rep.Bytes != 3*64<<10 {
		t.Fatalf("clean verify: %+v %v", rep, err)
	}
	bad := r.ChunkID(b)
	raw, _ := be.Get(ctx, chunkName(bad))
	raw[len(raw)/2] ^= 0x40
	if err := be.Put(ctx, chunkName(bad), raw); err != nil {
		t.Fatal(err)
	}
	gone := r.ChunkID(c)
	if err := be.Delete(ctx, chunkName(gone)); err != nil {
		t.Fatal(err)
	}
	rep, err = r.Verify(ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 2 {
		t.Fatalf("problems %+v", rep.Problems)
	}
	want := map[string]string{bad: "b1,b2", gone: "b2,b3"}
	for _, pr := range rep.Problems {
		if want[pr.Chunk] != strings.Join(pr.Backups, ",") {
			t.Fatalf("problem %+v, want backups %s", pr, want[pr.Chunk])
		}
	}
	if _, err := r.ReadChunk(ctx, bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading the corrupt chunk: %v", err)
	}
}

func TestGCKeepsReferencedAndNeverRacesABackup(t *testing.T) {
	forBackends(t, testGCKeepsReferencedAndNeverRacesABackup)
}

func testGCKeepsReferencedAndNeverRacesABackup(t *testing.T, mk newBackend) {
	r, _ := testRepo(t, mk, GenerateKey())
	ctx := context.Background()
	a, b := randData(1, 64<<10), randData(2, 64<<10)
	backup(t, r, "b1", a)
	backup(t, r, "b2", a, b)
	// A backup in flight: GC must refuse, and its chunks must survive.
	w, err := r.NewWriter(ctx, "b3")
	if err != nil {
		t.Fatal(err)
	}
	cid, _, err := w.Put(ctx, randData(3, 64<<10))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.GC(ctx, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("GC beside a backup: %v, want ErrBusy", err)
	}
	if ok, _ := r.HasChunk(ctx, cid); !ok {
		t.Fatal("GC removed a chunk of a backup in flight")
	}
	w.Abort(ctx)
	if err := r.DeleteBackup(ctx, "b2"); err != nil {
		t.Fatal(err)
	}
	rep, err := r.GC(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Removed != 2 || rep.Kept != 1 {
		t.Fatalf("gc %+v: want 2 removed (b, aborted chunk), 1 kept", rep)
	}
	// While GC holds the repository no backup starts.
	l, err := r.LockExclusive(ctx, "gc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.NewWriter(ctx, "b4"); !errors.Is(err, ErrBusy) {
		t.Fatalf("backup during GC: %v", err)
	}
	l.Release(ctx)
	if v, err := r.Verify(ctx, nil, nil); err != nil || !v.OK() {
		t.Fatalf("verify after gc: %+v %v", v, err)
	}
}

func TestExpiredBackupLockIsTakenOverAndItsCommitRefused(t *testing.T) {
	forBackends(t, testExpiredBackupLockIsTakenOverAndItsCommitRefused)
}

func testExpiredBackupLockIsTakenOverAndItsCommitRefused(t *testing.T, mk newBackend) {
	r, _ := testRepo(t, mk, GenerateKey())
	now := time.Now()
	r.now = func() time.Time { return now }
	ctx := context.Background()
	w, err := r.NewWriter(ctx, "dead")
	if err != nil {
		t.Fatal(err)
	}
	cid, _, _ := w.Put(ctx, randData(9, 64<<10))
	now = now.Add(LockTTL + time.Second) // the holder died: no refresh
	rep, err := r.GC(ctx, nil)
	if err != nil || rep.Removed != 1 {
		t.Fatalf("gc after the holder died: %+v %v", rep, err)
	}
	err = w.Commit(ctx, &Manifest{Disks: []DiskIndex{{Name: "root", Size: 64 << 10, Chunks: []string{cid}}}})
	if err == nil {
		t.Fatal("a backup whose lock expired was committed")
	}
	if ids, _ := r.ListIDs(ctx); len(ids) != 0 {
		t.Fatalf("listed %v", ids)
	}
}

// TestSyncIsResumable syncs between every pair of backends (a directory
// to an object store is the second site of docs/backup.md).
func TestSyncIsResumable(t *testing.T) {
	for _, from := range backends {
		for _, to := range backends {
			t.Run(from.name+"-to-"+to.name, func(t *testing.T) { testSyncIsResumable(t, from.mk, to.mk) })
		}
	}
}

func testSyncIsResumable(t *testing.T, mkSrc, mkDst newBackend) {
	key := GenerateKey()
	src, _ := testRepo(t, mkSrc, key)
	var chunks [][]byte
	for i := range 6 {
		chunks = append(chunks, randData(uint64(i), 64<<10))
	}
	backup(t, src, "b1", chunks[:3]...)
	backup(t, src, "b2", chunks[2:]...)
	dst, _ := testRepo(t, mkDst, key)
	ctx, cancel := context.WithCancel(context.Background())
	_, err := Sync(ctx, src, dst, nil, func(done, total int64) {
		if done == 4 {
			cancel()
		}
	})
	if err == nil {
		t.Fatal("interrupted sync reported success")
	}
	ids, _ := dst.ListIDs(context.Background())
	for _, id := range ids {
		if rep, _ := dst.Verify(context.Background(), []string{id}, nil); !rep.OK() {
			t.Fatalf("interrupted sync left backup %s without its chunks: %+v", id, rep.Problems)
		}
	}
	rep, err := Sync(context.Background(), src, dst, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.PresentChunks == 0 || rep.Backups+rep.Skipped != 2 {
		t.Fatalf("resumed sync %+v: want chunks already present and both backups", rep)
	}
	v, err := dst.Verify(context.Background(), nil, nil)
	if err != nil || !v.OK() || v.Backups != 2 || v.Chunks != 6 {
		t.Fatalf("target verify %+v %v", v, err)
	}
	other, _ := testRepo(t, mkDst, GenerateKey())
	if _, err := Sync(context.Background(), src, other, nil, nil); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("sync to a repository with another key: %v", err)
	}
}

package etcdstore_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// TestDefragAfterALargeCompaction: once a compaction leaves most of the
// database file free, the embedded member defragments it by itself: the
// file shrinks to about what is in use, and so do its resident pages;
// the data stays. Before, the file kept its size (and its pages, read
// while they held the history, stayed resident) until a restart.
func TestDefragAfterALargeCompaction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s, err := etcdstore.StartEmbedded(ctx, etcdstore.Config{DataDir: dir, UnsafeNoFsync: true,
		CompactionRetention: time.Hour, DefragMinFree: 4 << 20, DefragCheckInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// 16 MiB of history: 512 versions of 8 keys of 4 KiB
	val := []byte(strings.Repeat("x", 4096))
	var rev int64
	for i := range 512 {
		var ops []store.Op
		for k := range 8 {
			ops = append(ops, store.Put(fmt.Sprintf("/k/%d", k), append(val[:4000:4000], strconv.Itoa(i)...)))
		}
		if _, rev, err = s.Txn(ctx, nil, ops); err != nil {
			t.Fatal(err)
		}
	}
	// read the history back, as a watch from an old revision would: its
	// pages become resident
	for r := rev - 500; r <= rev; r += 50 {
		for ev := range s.Watch(ctx, "/k/", r) {
			_ = ev
			break
		}
	}
	size, inUse, ok := s.DBSize()
	db := filepath.Join(dir, "member", "snap", "db")
	rss := mappedRSS(t, db)
	if !ok || size < 16<<20 {
		t.Fatalf("before: database of %d bytes (%v), want 16 MiB or more", size, ok)
	}
	if err := s.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		after, afterInUse, _ := s.DBSize()
		if after < size/2 {
			t.Logf("database %d → %d bytes (in use %d → %d), its resident pages %d → %d bytes",
				size, after, inUse, afterInUse, rss, mappedRSS(t, db))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("database still %d bytes (%d in use) 30 s after a compaction freed most of it; was %d", after, afterInUse, size)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for k := range 8 {
		kv, err := s.Get(ctx, fmt.Sprintf("/k/%d", k))
		if err != nil || !strings.HasSuffix(string(kv.Value), "511") {
			t.Fatalf("after the defragmentation /k/%d: %q, %v", k, kv.Value, err)
		}
	}
}

// mappedRSS is the resident bytes of this process's mappings of path.
func mappedRSS(t *testing.T, path string) int64 {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no /proc/self/smaps: %v", err)
	}
	defer f.Close()
	var total int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 6 && strings.Contains(fields[0], "-"):
			in = fields[len(fields)-1] == path
		case in && len(fields) == 3 && fields[0] == "Rss:":
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			total += kb << 10
		}
	}
	return total
}

func TestDefragDue(t *testing.T) {
	for _, tc := range []struct {
		size, inUse, minFree int64
		want                 bool
	}{
		{size: 1 << 30, inUse: 200 << 20, minFree: 256 << 20, want: true},
		{size: 1 << 30, inUse: 600 << 20, minFree: 256 << 20, want: false}, // less free than in use
		{size: 300 << 20, inUse: 100 << 20, minFree: 256 << 20, want: false},
		{size: 1 << 30, inUse: 200 << 20, minFree: -1, want: false},
	} {
		if got := etcdstore.DefragDue(tc.size, tc.inUse, tc.minFree); got != tc.want {
			t.Errorf("defragDue(%d, %d, %d) = %v, want %v", tc.size, tc.inUse, tc.minFree, got, tc.want)
		}
	}
}

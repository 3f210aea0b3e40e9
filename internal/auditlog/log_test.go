package auditlog

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/audit"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// clock is a fake clock that steps when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) step(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testSigner(t testing.TB) *audit.Signer {
	_, priv, err := ed25519.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{5}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	return audit.NewSigner(priv)
}

// startLog runs a Log on st until the test ends.
func startLog(t testing.TB, st store.Store, c *clock, name string, tune func(*Config)) *Log {
	cfg := Config{Store: st, Signer: testSigner(t), Server: name, Clock: c.now, CheckpointEvery: 50}
	if tune != nil {
		tune(&cfg)
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

func apiRecord(i int) model.AuditRecord {
	return model.AuditRecord{Kind: model.AuditKindAPI, Action: "POST /api/v1/vms", Project: "p",
		Object: fmt.Sprintf("vm/p/v%d", i), Outcome: "ok", Status: 201}
}

// TestTwoServersOneChain: two servers' logs append concurrently to one
// store; the result is one chain that verifies, with checkpoints.
func TestTwoServersOneChain(t *testing.T) {
	st := memstore.New()
	c := &clock{t: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}
	a, b := startLog(t, st, c, "s1", nil), startLog(t, st, c, "s2", nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Go(func() {
			l := a
			if i%2 == 1 {
				l = b
			}
			if err := l.Record(ctx, apiRecord(i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := VerifyStore(ctx, st, a.Signer().Public(), c.now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Bad != nil {
		t.Fatalf("chain: %v", rep.Bad)
	}
	if rep.Records < 300 || rep.Checkpoints < 5 || rep.SignedThrough != rep.Last {
		t.Fatalf("report %+v", rep)
	}
	servers := map[string]int{}
	recs, err := Newest(ctx, st, Filter{Kind: model.AuditKindAPI}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		servers[r.Server]++
	}
	if len(recs) != 300 || servers["s1"] != 150 || servers["s2"] != 150 {
		t.Fatalf("%d api records by server %v", len(recs), servers)
	}
}

// TestIdleHeadIsResigned: while nothing is appended the head is signed
// again, so that a verifier can tell a fresh head from a rolled-back one.
func TestIdleHeadIsResigned(t *testing.T) {
	st := memstore.New()
	c := &clock{t: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}
	l := startLog(t, st, c, "s1", func(cfg *Config) { cfg.HeadRefresh = 40 * time.Millisecond })
	ctx := context.Background()
	if err := l.Record(ctx, apiRecord(1)); err != nil {
		t.Fatal(err)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	h0, _, _ := ReadHead(ctx, st)
	c.step(time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, _, err := ReadHead(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if h.Time.After(h0.Time) {
			if h.Seq < h0.Seq {
				t.Fatalf("head went back: %d < %d", h.Seq, h0.Seq)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the idle head was not signed again")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rep, err := VerifyStore(ctx, st, l.Signer().Public(), c.now(), time.Minute)
	if err != nil || rep.Bad != nil {
		t.Fatalf("verify: %v %v", rep.Bad, err)
	}
}

// TestTamperingInTheStore edits, removes, reorders and truncates records
// in the store itself — inside the stored batches, and whole batches —
// and expects verify to name the first bad record.
func TestTamperingInTheStore(t *testing.T) {
	ctx := context.Background()
	swap := func(a, b int64) func(int64, map[int64][]byte) [][]byte {
		return func(seq int64, all map[int64][]byte) [][]byte {
			switch seq {
			case a:
				return [][]byte{all[b]}
			case b:
				return [][]byte{all[a]}
			}
			return [][]byte{all[seq]}
		}
	}
	drop := func(from, to int64) func(int64, map[int64][]byte) [][]byte {
		return func(seq int64, all map[int64][]byte) [][]byte {
			if seq >= from && seq <= to {
				return nil
			}
			return [][]byte{all[seq]}
		}
	}
	tests := []struct {
		name    string
		tamper  func(seq int64, all map[int64][]byte) [][]byte
		seq     int64
		problem string
	}{
		{"edit", func(seq int64, all map[int64][]byte) [][]byte {
			if seq == 20 {
				return [][]byte{bytes.Replace(all[seq], []byte(`"ok"`), []byte(`"no"`), 1)}
			}
			return [][]byte{all[seq]}
		}, 20, audit.ProblemEdited},
		{"remove", drop(33, 33), 33, audit.ProblemRemoved},
		{"reorder within a batch", swap(40, 41), 40, audit.ProblemReordered},
		{"reorder across batches", swap(43, 44), 43, audit.ProblemReordered},
		{"remove a whole batch", drop(23, 29), 23, audit.ProblemRemoved},
		{"truncate", drop(55, 1000), 55, audit.ProblemTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := memstore.New()
			c := &clock{t: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}
			// batches of 7 (the first with a checkpoint): 1-8, 9-15, 16-22, 23-29, 30-36, 37-43, 44-50 …
			l := startLog(t, st, c, "s1", func(cfg *Config) { cfg.MaxBatch = 7 })
			for i := range 60 {
				if err := l.Record(ctx, apiRecord(i)); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if first := batchFirsts(t, st); len(first) < 8 || first[3] != 23 || first[5] != 37 || first[6] != 44 {
				t.Fatalf("batches start at %v", first)
			}
			if rep, err := VerifyStore(ctx, st, l.Signer().Public(), c.now(), time.Minute); err != nil || rep.Bad != nil {
				t.Fatalf("before tampering: %+v %v", rep, err)
			}
			rewrite(t, st, tt.tamper)
			rep, err := VerifyStore(ctx, st, l.Signer().Public(), c.now(), time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Bad == nil || rep.Bad.Seq != tt.seq || rep.Bad.Problem != tt.problem {
				t.Fatalf("finding %v; want record %d %s", rep.Bad, tt.seq, tt.problem)
			}
		})
	}
}

// batchFirsts lists where the stored batches start.
func batchFirsts(t *testing.T, st store.Store) []int64 {
	t.Helper()
	kvs, _, err := st.List(context.Background(), store.AuditRecordsPrefix)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int64, len(kvs))
	for i, kv := range kvs {
		out[i] = seqOf(kv.Key)
	}
	return out
}

// rewrite rewrites every stored batch in place: record seq becomes what
// fn returns for it (nil: removed); a batch left empty is deleted.
func rewrite(t *testing.T, st store.Store, fn func(seq int64, all map[int64][]byte) [][]byte) {
	t.Helper()
	ctx := context.Background()
	kvs, _, err := st.List(ctx, store.AuditRecordsPrefix)
	if err != nil {
		t.Fatal(err)
	}
	all := map[int64][]byte{}
	for _, kv := range kvs {
		for i, rec := range bytes.Split(kv.Value, []byte{'\n'}) {
			all[seqOf(kv.Key)+int64(i)] = rec
		}
	}
	for _, kv := range kvs {
		var out [][]byte
		for i := range bytes.Count(kv.Value, []byte{'\n'}) + 1 {
			out = append(out, fn(seqOf(kv.Key)+int64(i), all)...)
		}
		if len(out) == 0 {
			del(t, st, kv.Key)
		} else if v := bytes.Join(out, []byte{'\n'}); !bytes.Equal(v, kv.Value) {
			put(t, st, kv.Key, v)
		}
	}
}

func put(t *testing.T, st store.Store, k string, v []byte) {
	t.Helper()
	if _, _, err := st.Txn(context.Background(), nil, []store.Op{store.Put(k, v)}); err != nil {
		t.Fatal(err)
	}
}

func del(t *testing.T, st store.Store, k string) {
	t.Helper()
	if _, _, err := st.Txn(context.Background(), nil, []store.Op{store.Delete(k)}); err != nil {
		t.Fatal(err)
	}
}

// TestExportAndPrune: the exporter writes the chain to files and the
// store keeps its window after a signed anchor; files and window each
// verify, and together they hold every record once.
func TestExportAndPrune(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	c := &clock{t: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}
	l := startLog(t, st, c, "s1", nil)
	dir := t.TempDir()
	x := NewExporter(l, ExportConfig{Dir: dir, Window: 100, Segment: 120})
	for round := range 5 {
		for i := range 90 {
			if err := l.Record(ctx, apiRecord(round*100+i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := x.Step(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	head, _, _ := ReadHead(ctx, st)
	files, err := ExportFiles(dir)
	if err != nil || len(files) < 3 {
		t.Fatalf("export files %v %v", files, err)
	}
	frep, err := audit.VerifyFiles(audit.FileInput{Paths: files, Key: l.Signer().Public(), Head: &head.AuditSignature})
	if err != nil || frep.Bad != nil || frep.First != 1 || frep.Last != head.Seq {
		t.Fatalf("files: %+v %v", frep, err)
	}
	srep, err := VerifyStore(ctx, st, l.Signer().Public(), c.now(), time.Minute)
	if err != nil || srep.Bad != nil {
		t.Fatalf("store: %+v %v", srep, err)
	}
	// whole batches are pruned: the window holds at least 100 records
	if srep.Records < 100 || srep.Records >= 100+DefaultMaxBatch || srep.First+int64(srep.Records)-1 != head.Seq {
		t.Fatalf("window %d records from %d; head %d", srep.Records, srep.First, head.Seq)
	}
	// a record edited in an export file is named
	b, _ := readFile(files[1])
	writeFile(t, files[1], bytes.Replace(b, []byte(`"outcome":"ok"`), []byte(`"outcome":"no"`), 1))
	frep, _ = audit.VerifyFiles(audit.FileInput{Paths: files, Key: l.Signer().Public(), Head: &head.AuditSignature})
	if frep.Bad == nil || frep.Bad.Problem != audit.ProblemEdited {
		t.Fatalf("an edited export file verifies: %+v", frep)
	}
}

// TestPruneWithoutExport: without an export directory the store keeps
// its window; the anchor lets the window verify alone.
func TestPruneWithoutExport(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	c := &clock{t: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}
	l := startLog(t, st, c, "s1", func(cfg *Config) { cfg.MaxBatch = 10 })
	x := NewExporter(l, ExportConfig{Window: 50})
	for i := range 180 {
		if err := l.Record(ctx, apiRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := x.Step(ctx, st); err != nil {
		t.Fatal(err)
	}
	head, _, _ := ReadHead(ctx, st)
	kept, _ := Range(ctx, st, 1, head.Seq, 0)
	if len(kept) < 50 || len(kept) >= 50+10 || kept[len(kept)-1].Seq != head.Seq {
		t.Fatalf("%d records kept, want 50 (whole batches)", len(kept))
	}
	kvs, _, _ := st.List(ctx, store.AuditRecordsPrefix)
	rep, err := VerifyStore(ctx, st, l.Signer().Public(), c.now(), time.Minute)
	if err != nil || rep.Bad != nil {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	// deleting the window's first record (and leaving the anchor) shows
	del(t, st, kvs[0].Key)
	rep, _ = VerifyStore(ctx, st, l.Signer().Public(), c.now(), time.Minute)
	if rep.Bad == nil || rep.Bad.Problem != audit.ProblemRemoved {
		t.Fatalf("a record removed at the window's start: %+v", rep.Bad)
	}
}

func TestSigningKeyIsSealedAndShared(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	seal, _ := pki.NewSealKey()
	now := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	s1, err := LoadOrCreateKey(ctx, st, seal, now)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := LoadOrCreateKey(ctx, st, seal, now)
	if err != nil || s2.KeyID() != s1.KeyID() {
		t.Fatalf("second server: %v %v", s2, err)
	}
	other, _ := pki.NewSealKey()
	if _, err := LoadOrCreateKey(ctx, st, other, now); err == nil {
		t.Fatal("another seal key opens the audit key")
	}
	pub, err := PublicKey(ctx, st)
	if err != nil || pub.KeyID != s1.KeyID() || pub.Sealed != "" {
		t.Fatalf("published key %+v %v", pub, err)
	}
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

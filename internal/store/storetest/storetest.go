// Package storetest is the contract suite every store.Store must pass:
// reads, compare-and-swap transactions, watches (from now and resumed
// from a past revision) and leases. Implementations call Run from their
// tests. It imports only the standard library and internal/store.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
)

// Compactor is implemented by stores that can drop history before a
// revision; Run then checks that a watch from a dropped revision fails
// with store.ErrCompacted.
type Compactor interface {
	Compact(ctx context.Context, rev int64) error
}

// NewStore returns a store for one subtest. It may return a fresh store
// each time or share one: every subtest keeps its keys under a prefix of
// its own and makes no assumption on absolute revisions. newStore owns
// the store's cleanup (t.Cleanup); only the "Closed" subtest closes it,
// so a shared store must not be handed to that one.
type NewStore func(t *testing.T) store.Store

// waitFor bounds every wait of the suite. Nothing asserts how fast a
// store is; it is only how long a test waits before it gives up.
const waitFor = 15 * time.Second

// Run runs the contract suite against the stores newStore returns.
func Run(t *testing.T, newStore NewStore) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store, string)
	}{
		{"GetNotFound", testGetNotFound},
		{"PutGetRevisions", testPutGetRevisions},
		{"ListPrefixOrder", testListPrefixOrder},
		{"TxnConds", testTxnConds},
		{"TxnFailedChangesNothing", testTxnFailedChangesNothing},
		{"TxnMultiOpAtomic", testTxnMultiOpAtomic},
		{"TxnNoChangeKeepsRevision", testTxnNoChangeKeepsRevision},
		{"TxnUnknownLease", testTxnUnknownLease},
		{"ConcurrentCAS", testConcurrentCAS},
		{"WatchFromNow", testWatchFromNow},
		{"WatchFromPastRevision", testWatchFromPast},
		{"WatchFromFutureRevision", testWatchFromFuture},
		{"WatchTxnOneRevision", testWatchTxnOneRevision},
		{"WatchClosesOnCancel", testWatchClosesOnCancel},
		{"WatchCompacted", testWatchCompacted},
		{"LeaseGrantKeepAliveRevoke", testLeaseRevoke},
		{"LeaseExpiry", testLeaseExpiry},
		{"LeaseKeepAliveHolds", testLeaseKeepAliveHolds},
		{"LeaseBadTTL", testLeaseBadTTL},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			tc.fn(t, s, fmt.Sprintf("/storetest/%s/%d/", tc.name, time.Now().UnixNano()))
		})
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// put writes key unconditionally and returns the revision.
func put(t *testing.T, s store.Store, key, val string) int64 {
	t.Helper()
	ok, rev, err := s.Txn(ctxT(t), nil, []store.Op{store.Put(key, []byte(val))})
	if err != nil || !ok {
		t.Fatalf("put %s: ok=%v err=%v", key, ok, err)
	}
	return rev
}

func del(t *testing.T, s store.Store, key string) int64 {
	t.Helper()
	ok, rev, err := s.Txn(ctxT(t), nil, []store.Op{store.Delete(key)})
	if err != nil || !ok {
		t.Fatalf("delete %s: ok=%v err=%v", key, ok, err)
	}
	return rev
}

func mustGet(t *testing.T, s store.Store, key string) store.KV {
	t.Helper()
	kv, err := s.Get(ctxT(t), key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return kv
}

func mustAbsent(t *testing.T, s store.Store, key string) {
	t.Helper()
	if kv, err := s.Get(ctxT(t), key); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get %s = %+v, %v; want ErrNotFound", key, kv, err)
	}
}

func testGetNotFound(t *testing.T, s store.Store, p string) {
	_, err := s.Get(ctxT(t), p+"missing")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get missing: err = %v, want ErrNotFound", err)
	}
	put(t, s, p+"k", "v")
	del(t, s, p+"k")
	mustAbsent(t, s, p+"k")
}

func testPutGetRevisions(t *testing.T, s store.Store, p string) {
	r1 := put(t, s, p+"k", "one")
	kv := mustGet(t, s, p+"k")
	if string(kv.Value) != "one" || kv.Key != p+"k" || kv.CreateRev != r1 || kv.ModRev != r1 || kv.Lease != 0 {
		t.Fatalf("after create: %+v, want value one, create=mod=%d", kv, r1)
	}
	r2 := put(t, s, p+"k", "two")
	if r2 <= r1 {
		t.Fatalf("revision went from %d to %d", r1, r2)
	}
	kv = mustGet(t, s, p+"k")
	if string(kv.Value) != "two" || kv.CreateRev != r1 || kv.ModRev != r2 {
		t.Fatalf("after update: %+v, want create=%d mod=%d", kv, r1, r2)
	}
	// An empty value is a value, not an absent key.
	put(t, s, p+"empty", "")
	if kv := mustGet(t, s, p+"empty"); len(kv.Value) != 0 {
		t.Fatalf("empty value read back as %q", kv.Value)
	}
}

func testListPrefixOrder(t *testing.T, s store.Store, p string) {
	for _, k := range []string{"c", "a", "b/2", "b/1", "d"} {
		put(t, s, p+"in/"+k, k)
	}
	put(t, s, p+"inx", "sibling, not under the prefix")
	last := put(t, s, p+"out/a", "x")
	kvs, rev, err := s.List(ctxT(t), p+"in/")
	if err != nil {
		t.Fatal(err)
	}
	if rev < last {
		t.Errorf("List revision %d older than the last write %d", rev, last)
	}
	var got []string
	for _, kv := range kvs {
		got = append(got, kv.Key[len(p+"in/"):]+"="+string(kv.Value))
	}
	want := []string{"a=a", "b/1=b/1", "b/2=b/2", "c=c", "d=d"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	kvs, rev2, err := s.List(ctxT(t), p+"none/")
	if err != nil || len(kvs) != 0 || rev2 < last {
		t.Fatalf("List empty prefix = %v, %d, %v", kvs, rev2, err)
	}
}

func testTxnConds(t *testing.T, s store.Store, p string) {
	rev := put(t, s, p+"present", "v")
	absent := p + "absent"
	present := p + "present"
	tests := []struct {
		name  string
		conds []store.Cond
		want  bool
	}{
		{"no conds", nil, true},
		{"IfRev current", []store.Cond{store.IfRev(present, rev)}, true},
		{"IfRev stale", []store.Cond{store.IfRev(present, rev-1)}, false},
		{"IfRev future", []store.Cond{store.IfRev(present, rev+100)}, false},
		{"IfRev 0 on absent", []store.Cond{store.IfRev(absent, 0)}, true},
		{"IfRev 0 on present", []store.Cond{store.IfRev(present, 0)}, false},
		{"IfRev n on absent", []store.Cond{store.IfRev(absent, rev)}, false},
		{"IfAbsent on absent", []store.Cond{store.IfAbsent(absent)}, true},
		{"IfAbsent on present", []store.Cond{store.IfAbsent(present)}, false},
		{"IfExists on present", []store.Cond{store.IfExists(present)}, true},
		{"IfExists on absent", []store.Cond{store.IfExists(absent)}, false},
		{"all hold", []store.Cond{store.IfExists(present), store.IfAbsent(absent), store.IfRev(present, rev)}, true},
		{"one fails", []store.Cond{store.IfExists(present), store.IfExists(absent)}, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := fmt.Sprintf("%starget%d", p, i)
			ok, _, err := s.Txn(ctxT(t), tc.conds, []store.Op{store.Put(target, []byte("x"))})
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.want {
				t.Fatalf("ok = %v, want %v", ok, tc.want)
			}
			_, err = s.Get(ctxT(t), target)
			if tc.want && err != nil {
				t.Fatalf("conds held but write missing: %v", err)
			}
			if !tc.want && !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("conds failed but write happened (err=%v)", err)
			}
		})
	}
}

func testTxnFailedChangesNothing(t *testing.T, s store.Store, p string) {
	r1 := put(t, s, p+"a", "a1")
	put(t, s, p+"b", "b1")
	_, before, err := s.List(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	ok, rev, err := s.Txn(ctxT(t), []store.Cond{store.IfRev(p+"a", r1), store.IfAbsent(p + "b")},
		[]store.Op{store.Put(p+"a", []byte("a2")), store.Delete(p + "b"), store.Put(p+"c", []byte("c"))})
	if err != nil || ok {
		t.Fatalf("txn with a failing cond: ok=%v err=%v", ok, err)
	}
	if rev < before {
		t.Errorf("failed txn returned revision %d, older than %d", rev, before)
	}
	kvs, after, err := s.List(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("failed txn moved the revision from %d to %d", before, after)
	}
	if len(kvs) != 2 || string(kvs[0].Value) != "a1" || kvs[0].ModRev != r1 || string(kvs[1].Value) != "b1" {
		t.Fatalf("failed txn changed data: %+v", kvs)
	}
}

func testTxnMultiOpAtomic(t *testing.T, s store.Store, p string) {
	put(t, s, p+"gone", "x")
	ok, rev, err := s.Txn(ctxT(t), []store.Cond{store.IfAbsent(p + "a")},
		[]store.Op{store.Put(p+"a", []byte("1")), store.Put(p+"b", []byte("2")), store.Delete(p + "gone")})
	if err != nil || !ok {
		t.Fatalf("txn: ok=%v err=%v", ok, err)
	}
	for _, k := range []string{"a", "b"} {
		if kv := mustGet(t, s, p+k); kv.ModRev != rev {
			t.Errorf("%s ModRev = %d, want the txn's revision %d", k, kv.ModRev, rev)
		}
	}
	mustAbsent(t, s, p+"gone")
	// Ops with no conds and nothing to write still succeed.
	if ok, _, err := s.Txn(ctxT(t), nil, nil); err != nil || !ok {
		t.Fatalf("empty txn: ok=%v err=%v", ok, err)
	}
}

func testTxnNoChangeKeepsRevision(t *testing.T, s store.Store, p string) {
	rev := put(t, s, p+"k", "v")
	// Deleting a key that is not there changes nothing, so, as in etcd,
	// the revision stays.
	ok, got, err := s.Txn(ctxT(t), nil, []store.Op{store.Delete(p + "absent")})
	if err != nil || !ok {
		t.Fatalf("delete of an absent key: ok=%v err=%v", ok, err)
	}
	if got != rev {
		t.Errorf("delete of an absent key moved the revision from %d to %d", rev, got)
	}
	if next := put(t, s, p+"k", "w"); next != rev+1 {
		t.Errorf("next write at revision %d, want %d", next, rev+1)
	}
}

func testTxnUnknownLease(t *testing.T, s store.Store, p string) {
	_, _, err := s.Txn(ctxT(t), nil, []store.Op{store.PutWithLease(p+"k", []byte("v"), store.LeaseID(0x7eadbeef))})
	if !errors.Is(err, store.ErrNoLease) {
		t.Fatalf("put with unknown lease: err = %v, want ErrNoLease", err)
	}
	mustAbsent(t, s, p+"k")
}

func testConcurrentCAS(t *testing.T, s store.Store, p string) {
	const workers, each = 8, 25
	key := p + "counter"
	put(t, s, key, "0")
	errc := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() { errc <- incrementN(ctxT(t), s, key, each) }()
	}
	for w := 0; w < workers; w++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if got := string(mustGet(t, s, key).Value); got != fmt.Sprint(workers*each) {
		t.Fatalf("counter = %s after %d increments: lost updates", got, workers*each)
	}
}

// incrementN adds n to the decimal counter at key with read +
// compare-and-swap, retrying on conflict.
func incrementN(ctx context.Context, s store.Store, key string, n int) error {
	for i := 0; i < n; {
		kv, err := s.Get(ctx, key)
		if err != nil {
			return err
		}
		var v int
		if _, err := fmt.Sscan(string(kv.Value), &v); err != nil {
			return fmt.Errorf("counter %q: %w", kv.Value, err)
		}
		ok, _, err := s.Txn(ctx, []store.Cond{store.IfRev(key, kv.ModRev)}, []store.Op{store.Put(key, []byte(fmt.Sprint(v+1)))})
		if err != nil {
			return err
		}
		if ok {
			i++
		}
	}
	return nil
}

// bareValue checks a delete event carries the value the key had.
func checkEvent(t *testing.T, ev store.WatchEvent, typ store.EventType, key, val string) {
	t.Helper()
	if ev.Type != typ || ev.KV.Key != key || !bytes.Equal(ev.KV.Value, []byte(val)) {
		t.Fatalf("event = {type %d key %s value %q}, want {type %d key %s value %q}", ev.Type, ev.KV.Key, ev.KV.Value, typ, key, val)
	}
	if ev.Rev == 0 || ev.KV.ModRev != ev.Rev {
		t.Fatalf("event revisions: Rev=%d KV.ModRev=%d", ev.Rev, ev.KV.ModRev)
	}
}

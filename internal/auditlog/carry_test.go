package auditlog

import (
	"context"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// carrier is a request's intent, made once.
type carrier struct {
	l    *Log
	rec  model.AuditRecord
	k    string
	v    []byte
	used int
}

func (c *carrier) Intent() (string, []byte) {
	c.used++
	if c.k == "" {
		var err error
		if c.k, c.v, err = c.l.Intent(c.rec); err != nil {
			panic(err)
		}
	}
	return c.k, c.v
}

// change commits a change carrying rec's intent, as a request's
// repository would; it returns the intent's key.
func change(t *testing.T, st store.Store, l *Log, i int, conds ...store.Cond) (string, bool) {
	t.Helper()
	c := &carrier{l: l, rec: apiRecord(i)}
	ctx := WithCarrier(context.Background(), c)
	ok, _, err := Carrying(st).Txn(ctx, conds, []store.Op{store.Put(store.Root+"vms/p/v"+string(rune('a'+i)), []byte("{}"))})
	if err != nil {
		t.Fatal(err)
	}
	return c.k, ok
}

func newLog(t *testing.T, st store.Store, c *clock, name string) *Log {
	t.Helper()
	l, err := New(Config{Store: st, Signer: testSigner(t), Server: name, Clock: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func pending(t *testing.T, st store.Store) []store.KV {
	t.Helper()
	kvs, _, err := st.List(context.Background(), store.AuditPendingPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return kvs
}

// TestIntentsSurviveACrash: changes commit with their intents; the
// server dies before its appender linked their records (nothing of its
// queue reaches the store). Its next run links every one of them, once,
// in a chain that verifies; a third run adds nothing.
func TestIntentsSurviveACrash(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	c := &clock{t: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}
	dead := newLog(t, st, c, "s1") // never runs: the process dies
	for i := range 5 {
		k, ok := change(t, st, dead, i)
		if !ok || k == "" {
			t.Fatalf("change %d: ok %v intent %q", i, ok, k)
		}
		if err := dead.RecordCarried(apiRecord(i), k, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(pending(t, st)); n != 5 {
		t.Fatalf("%d intents in the store, want 5", n)
	}
	for run := range 2 {
		l := startLog(t, st, c, "s1", nil)
		if err := l.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		recs, err := Newest(ctx, st, Filter{Kind: model.AuditKindAPI}, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 5 {
			t.Fatalf("run %d: %d records, want the 5 acknowledged changes", run, len(recs))
		}
		for _, r := range recs {
			if r.Reason != RecoveredReason || r.Outcome != "ok" || r.Server != "s1" {
				t.Fatalf("recovered record %+v", r)
			}
		}
		if n := len(pending(t, st)); n != 0 {
			t.Fatalf("%d intents left", n)
		}
		rep, err := VerifyStore(ctx, st, l.Signer().Public(), c.now(), time.Minute)
		if err != nil || rep.Bad != nil {
			t.Fatalf("verify: %+v %v", rep, err)
		}
	}
}

// TestCarriedRecordsAreWrittenOnce: a live server links the final
// records of its changes and deletes their intents in the same
// transaction: nothing is left to recover, nothing is recorded twice;
// an intent of a change whose transaction failed never reaches the
// store.
func TestCarriedRecordsAreWrittenOnce(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	c := &clock{t: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}
	l := startLog(t, st, c, "s1", nil)
	for i := range 5 {
		k, _ := change(t, st, l, i)
		rec := apiRecord(i)
		rec.Status = 201
		if err := l.RecordCarried(rec, k, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if k, ok := change(t, st, l, 9, store.IfExists(store.Root+"nothing")); ok || k == "" {
		t.Fatalf("a refused change: ok %v", ok)
	}
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(pending(t, st)); n != 0 {
		t.Fatalf("%d intents left", n)
	}
	startLog(t, st, c, "s1", nil).Flush(ctx) // a restart recovers nothing
	recs, err := Newest(ctx, st, Filter{Kind: model.AuditKindAPI}, 100)
	if err != nil || len(recs) != 5 {
		t.Fatalf("%d records %v, want 5", len(recs), err)
	}
	for _, r := range recs {
		if r.Reason != "" || r.Status != 201 {
			t.Fatalf("record %+v", r)
		}
	}
}

// TestOtherServersIntentsWait: another server's intent is left to it
// (its record may still come) until it is RecoverAfter old; so is one of
// this run's whose record was dropped (never queued here).
func TestOtherServersIntentsWait(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	c := &clock{t: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}
	other := newLog(t, st, c, "s2")
	change(t, st, other, 1)
	l := startLog(t, st, c, "s1", nil)
	change(t, st, l, 2)
	if err := l.recoverIntents(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(pending(t, st)); n != 2 {
		t.Fatalf("fresh intents taken: %d left", n)
	}
	c.step(DefaultRecoverAfter)
	if err := l.recoverIntents(ctx); err != nil {
		t.Fatal(err)
	}
	recs, _ := Newest(ctx, st, Filter{Kind: model.AuditKindAPI}, 100)
	if n := len(pending(t, st)); n != 0 || len(recs) != 2 || recs[0].Server != "s2" || recs[1].Server != "s1" {
		t.Fatalf("%d intents left, records %+v", n, recs)
	}
}

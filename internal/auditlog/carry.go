package auditlog

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Intents: the record of a request that changes something rides in the
// change's own transaction, as an intent (/vpool/audit/pending/…), so
// that it is durable exactly when the change is — no loss window, no
// extra transaction and no shared key on the request's path. The
// server's appender later links the final record (with the request's
// outcome) into the chain and deletes the intent in the same
// transaction; an intent whose record never came (the server died) is
// linked as it is, said to be recovered (recoverIntents).

// Carrier is what a request's context carries (WithCarrier) for the
// store's transactions made for it (Carrying) to write its intent.
type Carrier = store.Carrier

// WithCarrier returns ctx carrying c.
func WithCarrier(ctx context.Context, c Carrier) context.Context { return store.WithCarrier(ctx, c) }

// Carrying wraps st: a transaction with operations made with a context
// that carries a Carrier also puts the carrier's intent, when it has
// room for one more operation (etcd takes at most 128: a full one is
// left as it is, and the record goes uncarried unless a later
// transaction of the request carries it). The wrapper adds nothing to
// other calls.
func Carrying(st store.Store) store.Store { return carrying{st} }

type carrying struct{ store.Store }

// maxTxnOps is etcd's default cap on a transaction's operations.
const maxTxnOps = 128

func (c carrying) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	if len(ops) > 0 && len(ops) < maxTxnOps {
		if op, ok := store.CarriedOp(ctx); ok && !hasKey(ops, op.Key) {
			ops = append(ops[:len(ops):len(ops)], op)
		}
	}
	return c.Store.Txn(ctx, conds, ops)
}

// hasKey says whether ops write key already (a group commit added the
// intents of the requests it commits: etcd refuses a key twice).
func hasKey(ops []store.Op, key string) bool {
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i].Key == key {
			return true
		}
	}
	return false
}

// Intent makes the intent of rec (Time and Server set when empty): the
// key and bytes a request's transaction writes beside its change. Queue
// the final record with RecordCarried and the key.
func (l *Log) Intent(rec model.AuditRecord) (string, []byte, error) {
	if rec.Time.IsZero() {
		rec.Time = l.cfg.Clock()
	}
	if rec.Server == "" {
		rec.Server = l.cfg.Server
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return "", nil, fmt.Errorf("auditlog: encode intent: %w", err)
	}
	return l.intentPrefix() + l.boot + "-" + strconv.FormatInt(l.intents.Add(1), 10), b, nil
}

// intentPrefix is where this server's intents live.
func (l *Log) intentPrefix() string {
	name := l.cfg.Server
	if name == "" {
		name = "_"
	}
	return store.AuditPendingPrefix + name + "/"
}

// RecoveredReason is the Reason of a record linked from its intent.
const RecoveredReason = "recovered from its intent: the change was committed; the server stopped before it recorded the outcome"

// recoverIntents links the intents whose records will not come: this
// server's from an earlier run, and any older than RecoverAfter (a
// record dropped, or not written after its retries, leaves its intent). Each is linked as it is (the change it rode with was
// committed) and deleted in the same transaction, guarded on its
// revision: two servers never link one intent twice.
func (l *Log) recoverIntents(ctx context.Context) error {
	kvs, _, err := l.cfg.Store.List(ctx, store.AuditPendingPrefix)
	if err != nil || len(kvs) == 0 {
		if err != nil {
			return fmt.Errorf("auditlog: read intents: %w", err)
		}
		return nil
	}
	own, mine := l.intentPrefix(), l.intentPrefix()+l.boot+"-"
	now := l.cfg.Clock()
	var recs []model.AuditRecord
	var conds []store.Cond
	var dels []store.Op
	for _, kv := range kvs {
		if len(recs) >= l.cfg.MaxBatch {
			break
		}
		var rec model.AuditRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			rec = model.AuditRecord{Time: now, Kind: model.AuditKindGap, Server: l.cfg.Server, Outcome: "failed",
				Reason: "an intent in the store is not a record (" + kv.Key + ")"}
		} else if (strings.HasPrefix(kv.Key, mine) || !strings.HasPrefix(kv.Key, own)) && now.Sub(rec.Time) < l.cfg.RecoverAfter {
			// this run's (its record is queued) or another server's
			// (which may still record it); taken when old: a record
			// dropped or not written leaves its intent
			continue
		}
		rec.Seq, rec.Prev = 0, ""
		if rec.Kind != model.AuditKindGap {
			rec.Reason = RecoveredReason
		}
		recs = append(recs, rec)
		conds = append(conds, store.IfRev(kv.Key, kv.ModRev))
		dels = append(dels, store.Delete(kv.Key))
	}
	if len(recs) == 0 {
		return nil
	}
	head, rev, err := l.current(ctx)
	if err != nil {
		return err
	}
	ops, nh, err := l.link(head, recs)
	if err != nil {
		return err
	}
	ok, nrev, err := l.put(ctx, append(conds, store.IfRev(store.AuditHeadKey, rev)), nh, append(ops, dels...))
	if err != nil {
		return err
	}
	if !ok {
		l.forget() // the head or an intent moved: the next tick tries again
		return nil
	}
	l.written.Add(int64(len(recs)))
	l.batches.Add(1)
	l.recovered.Add(int64(len(recs)))
	l.setHead(nh, nrev)
	l.log.Warn("audit records recovered from their intents", "records", len(recs))
	return nil
}

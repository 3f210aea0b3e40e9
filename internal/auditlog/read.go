package auditlog

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/audit"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// ReadHead returns the chain's head and its revision (zero head and 0
// when nothing was ever written).
func ReadHead(ctx context.Context, st store.Store) (model.AuditHead, int64, error) {
	var h model.AuditHead
	kv, err := st.Get(ctx, store.AuditHeadKey)
	if errors.Is(err, store.ErrNotFound) {
		return h, 0, nil
	}
	if err != nil {
		return h, 0, fmt.Errorf("auditlog: read head: %w", err)
	}
	if err := json.Unmarshal(kv.Value, &h); err != nil {
		return h, 0, fmt.Errorf("auditlog: decode head: %w", err)
	}
	return h, kv.ModRev, nil
}

// ReadAnchor returns the signed anchor the pruner left (nil when nothing
// was pruned) and its revision.
func ReadAnchor(ctx context.Context, st store.Store) (*model.AuditSignature, int64, error) {
	kv, err := st.Get(ctx, store.AuditAnchorKey)
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("auditlog: read anchor: %w", err)
	}
	var a model.AuditSignature
	if err := json.Unmarshal(kv.Value, &a); err != nil {
		return nil, 0, fmt.Errorf("auditlog: decode anchor: %w", err)
	}
	return &a, kv.ModRev, nil
}

// Raw is one stored record: its sequence number and exact bytes.
type Raw struct {
	Seq   int64
	Bytes []byte
}

// Range returns the stored records with from ≤ seq ≤ to, in order, at
// most limit of them (0: no limit). It lists only the buckets it needs.
func Range(ctx context.Context, st store.Store, from, to int64, limit int) ([]Raw, error) {
	if from < 1 {
		from = 1
	}
	var out []Raw
	for b := from / store.AuditBucket; b <= to/store.AuditBucket; b++ {
		kvs, _, err := st.List(ctx, store.AuditBucketPrefix(b*store.AuditBucket))
		if err != nil {
			return nil, fmt.Errorf("auditlog: read records: %w", err)
		}
		for _, kv := range kvs {
			seq := seqOf(kv.Key)
			if seq < from || seq > to {
				continue
			}
			out = append(out, Raw{Seq: seq, Bytes: kv.Value})
			if limit > 0 && len(out) >= limit {
				return out, nil
			}
		}
	}
	return out, nil
}

// seqOf reads the sequence number of a record key (-1 if malformed).
func seqOf(key string) int64 {
	i := strings.LastIndexByte(key, '/')
	var n int64
	if _, err := fmt.Sscanf(key[i+1:], "%d", &n); err != nil {
		return -1
	}
	return n
}

// Filter selects records for a listing.
type Filter struct {
	// Project, when set, keeps the records of that project only (a
	// tenant's view).
	Project string
	Kind    string
	// Object keeps records whose object starts with it.
	Object string
	// Before keeps records with seq < Before (0: from the newest).
	Before int64
	// After keeps records with seq > After.
	After int64
}

func (f Filter) match(r *model.AuditRecord) bool {
	return (f.Project == "" || r.Project == f.Project) && (f.Kind == "" || r.Kind == f.Kind) &&
		(f.Object == "" || strings.HasPrefix(r.Object, f.Object))
}

// MaxScan bounds how many records one listing reads from the store
// (a tenant's filter may match rarely).
const MaxScan = 20 * store.AuditBucket

// Newest returns up to limit records matching f, newest first, reading
// bucket by bucket from the head backwards (at most MaxScan records).
func Newest(ctx context.Context, st store.Store, f Filter, limit int) ([]model.AuditRecord, error) {
	head, _, err := ReadHead(ctx, st)
	if err != nil {
		return nil, err
	}
	top := head.Seq
	if f.Before > 0 && f.Before-1 < top {
		top = f.Before - 1
	}
	var out []model.AuditRecord
	scanned := 0
	for b := top / store.AuditBucket; b >= 0 && len(out) < limit && scanned < MaxScan; b-- {
		kvs, _, err := st.List(ctx, store.AuditBucketPrefix(b*store.AuditBucket))
		if err != nil {
			return nil, fmt.Errorf("auditlog: read records: %w", err)
		}
		if len(kvs) == 0 && b*store.AuditBucket > 0 {
			break // pruned below here
		}
		for i := len(kvs) - 1; i >= 0 && len(out) < limit; i-- {
			seq := seqOf(kvs[i].Key)
			if seq > top || seq <= f.After {
				continue
			}
			scanned++
			var r model.AuditRecord
			if err := json.Unmarshal(kvs[i].Value, &r); err != nil {
				return nil, fmt.Errorf("auditlog: decode record %d: %w", seq, err)
			}
			if f.match(&r) {
				out = append(out, r)
			}
		}
		if b*store.AuditBucket <= f.After {
			break
		}
	}
	return out, nil
}

// VerifyStore verifies the chain as the store holds it: the window of
// records after the signed anchor, up to the signed head (at most maxAge
// old at now; zero now: not checked).
func VerifyStore(ctx context.Context, st store.Store, key ed25519.PublicKey, now time.Time, maxAge time.Duration) (*audit.Report, error) {
	head, _, err := ReadHead(ctx, st)
	if err != nil {
		return nil, err
	}
	anchor, _, err := ReadAnchor(ctx, st)
	if err != nil {
		return nil, err
	}
	from := int64(1)
	if anchor != nil {
		from = anchor.Seq + 1
	}
	raws, err := Range(ctx, st, from, head.Seq+store.AuditBucket, 0)
	if err != nil {
		return nil, err
	}
	recs := make([][]byte, len(raws))
	for i, r := range raws {
		recs[i] = r.Bytes
	}
	in := audit.Input{Records: recs, Key: key, Anchor: anchor, Now: now, MaxHeadAge: maxAge}
	if head.Seq > 0 || head.Sig != "" {
		h := head.AuditSignature
		in.Head = &h
	}
	return audit.Verify(in), nil
}

// Exported returns the last record the exporter wrote to its files.
func Exported(ctx context.Context, st store.Store) (int64, error) {
	m, _, err := readMark(ctx, st)
	return m.Seq, err
}

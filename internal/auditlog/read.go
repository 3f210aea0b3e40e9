package auditlog

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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

// batch is one stored value: the records written by one transaction,
// first … first+len(recs)-1, their bytes one per line (records are
// compact JSON: never a raw newline). A store written before batches
// were packed holds batches of one.
type batch struct {
	key   string
	first int64
	recs  [][]byte
}

func (b batch) last() int64 { return b.first + int64(len(b.recs)) - 1 }

// bucketBatches lists the batches that start in bucket b, in order.
func bucketBatches(ctx context.Context, st store.Store, b int64) ([]batch, error) {
	kvs, _, err := st.List(ctx, store.AuditBucketPrefix(b*store.AuditBucket))
	if err != nil {
		return nil, fmt.Errorf("auditlog: read records: %w", err)
	}
	out := make([]batch, 0, len(kvs))
	for _, kv := range kvs {
		first := seqOf(kv.Key)
		if first < 1 {
			continue
		}
		out = append(out, batch{key: kv.Key, first: first, recs: bytes.Split(kv.Value, []byte{'\n'})})
	}
	return out, nil
}

// Range returns the stored records with from ≤ seq ≤ to, in order, at
// most limit of them (0: no limit). It lists only the buckets it needs
// (and the one before: a batch may start there). A record's Seq is its
// place in its batch; verification reads the one its bytes carry.
func Range(ctx context.Context, st store.Store, from, to int64, limit int) ([]Raw, error) {
	if from < 1 {
		from = 1
	}
	var out []Raw
	for b := max(from/store.AuditBucket-1, 0); b <= to/store.AuditBucket; b++ {
		bs, err := bucketBatches(ctx, st, b)
		if err != nil {
			return nil, err
		}
		for _, bt := range bs {
			if bt.last() < from {
				continue
			}
			for i, rec := range bt.recs {
				seq := bt.first + int64(i)
				if seq < from || seq > to {
					continue
				}
				out = append(out, Raw{Seq: seq, Bytes: rec})
				if limit > 0 && len(out) >= limit {
					return out, nil
				}
			}
		}
	}
	return out, nil
}

// seqOf reads the sequence number of a record key (-1 if malformed).
func seqOf(key string) int64 {
	n, err := strconv.ParseInt(key[strings.LastIndexByte(key, '/')+1:], 10, 64)
	if err != nil {
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
		bs, err := bucketBatches(ctx, st, b)
		if err != nil {
			return nil, err
		}
		if len(bs) == 0 && b*store.AuditBucket > 0 {
			break // pruned below here
		}
		for j := len(bs) - 1; j >= 0 && len(out) < limit; j-- {
			bt := bs[j]
			for i := len(bt.recs) - 1; i >= 0 && len(out) < limit; i-- {
				seq := bt.first + int64(i)
				if seq > top || seq <= f.After {
					continue
				}
				scanned++
				var r model.AuditRecord
				if err := json.Unmarshal(bt.recs[i], &r); err != nil {
					return nil, fmt.Errorf("auditlog: decode record %d: %w", seq, err)
				}
				if f.match(&r) {
					out = append(out, r)
				}
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

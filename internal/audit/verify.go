package audit

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Problems a verification finds, in Finding.Problem.
const (
	ProblemMalformed  = "malformed"  // not a record
	ProblemEdited     = "edited"     // its bytes are not those the chain vouches for
	ProblemRemoved    = "removed"    // missing between two records
	ProblemReordered  = "reordered"  // stored out of its place
	ProblemTruncated  = "truncated"  // missing at the end (the head names later records)
	ProblemSignature  = "signature"  // a checkpoint's, the head's or the anchor's signature fails
	ProblemStaleHead  = "stale-head" // the head was not re-signed in time: records after it may be cut off
	ProblemBeforeHead = "anchor"     // the first record does not follow the anchor
)

// ErrTampered is wrapped by every Finding.
var ErrTampered = errors.New("audit: the trail does not verify")

// Finding is the first bad record of a run: its sequence number (the
// record that should stand there), what is wrong, and why it was seen.
type Finding struct {
	Seq     int64  `json:"seq"`
	Problem string `json:"problem"`
	Detail  string `json:"detail"`
}

func (f *Finding) Error() string {
	return fmt.Sprintf("audit: record %d: %s: %s", f.Seq, f.Problem, f.Detail)
}

// Unwrap makes errors.Is(f, ErrTampered) hold.
func (f *Finding) Unwrap() error { return ErrTampered }

// Input is what a verification reads. Records are the stored bytes in
// stored order (key order in the store, line order in export files).
type Input struct {
	Records [][]byte
	// Key verifies checkpoints, the head and the anchor.
	Key ed25519.PublicKey
	// Anchor, when set, is the signed (seq, hash) of the record before
	// the first: the last record pruned from the store's window.
	// AnchorTrusted says the anchor was computed by the caller (the last
	// record of the export file before) and carries no signature.
	Anchor        *model.AuditSignature
	AnchorTrusted bool
	// Head, when set, is the signed head of the chain: the records must
	// end at it. Without one (an export file), records after the last
	// checkpoint are vouched for by the chain alone (Report.Unsigned).
	Head *model.AuditSignature
	// Now and MaxHeadAge bound the head's age (zero Now: not checked).
	Now        time.Time
	MaxHeadAge time.Duration
	// Partial says more records follow in another run (the next export
	// file): an end without a head is not worth a note.
	Partial bool
}

// Report is the outcome of a verification.
type Report struct {
	Records     int   `json:"records"`
	First       int64 `json:"first"`
	Last        int64 `json:"last"`
	Checkpoints int   `json:"checkpoints"`
	// SignedThrough is the last record a signature vouches for.
	SignedThrough int64 `json:"signedThrough"`
	// Unsigned counts records after SignedThrough.
	Unsigned int `json:"unsigned"`
	// Bad is the first bad record (nil: the run verifies).
	Bad *Finding `json:"bad,omitempty"`
	// Notes say what the run could not vouch for (e.g. records before
	// the first, pruned from the store).
	Notes []string `json:"notes,omitempty"`
}

// Err is Bad as an error (nil when the run verifies).
func (r *Report) Err() error {
	if r.Bad == nil {
		return nil
	}
	return r.Bad
}

// entry is one record as the verifier reads it, and its hash.
type entry struct {
	rec  link
	hash string
}

// link is the part of a record the chain is made of (decoding only this
// keeps verification fast).
type link struct {
	Seq        int64                 `json:"seq"`
	Prev       string                `json:"prev"`
	Kind       string                `json:"kind"`
	Checkpoint *model.AuditSignature `json:"checkpoint,omitempty"`
}

// Verify checks a run of records: every record decodes, sequence numbers
// follow each other, each record's Prev is the hash of the one before,
// every checkpoint's signature holds over the record before it, and the
// run ends at the head (signed, and young enough) and begins after the
// anchor. It names the first bad record.
func Verify(in Input) *Report {
	rep := &Report{Records: len(in.Records)}
	es := make([]entry, len(in.Records))
	for i, raw := range in.Records {
		if err := json.Unmarshal(raw, &es[i].rec); err != nil || es[i].rec.Seq <= 0 {
			seq := int64(0)
			if i > 0 {
				seq = es[i-1].rec.Seq + 1
			}
			rep.Bad = &Finding{Seq: seq, Problem: ProblemMalformed, Detail: fmt.Sprintf("entry %d is not an audit record", i+1)}
			return rep
		}
		es[i].hash = Hash(raw)
	}
	if f := checkEnds(in, es, rep); f != nil {
		rep.Bad = f
		return rep
	}
	if f := checkChain(in, es, rep); f != nil {
		rep.Bad = f
		return rep
	}
	if f := checkHead(in, es, rep); f != nil {
		rep.Bad = f
	}
	return rep
}

// checkEnds checks the anchor's signature and the first record against
// it, and fills First/Last.
func checkEnds(in Input, es []entry, rep *Report) *Finding {
	if in.Anchor != nil && !in.AnchorTrusted {
		if err := CheckSignature(in.Key, DomainAnchor, *in.Anchor); err != nil {
			return &Finding{Seq: in.Anchor.Seq + 1, Problem: ProblemSignature, Detail: "the anchor (the last pruned record) is not signed by the audit key: " + err.Error()}
		}
	}
	if in.Anchor != nil {
		rep.SignedThrough = in.Anchor.Seq
	}
	if len(es) == 0 {
		return nil
	}
	rep.First, rep.Last = es[0].rec.Seq, es[len(es)-1].rec.Seq
	first := es[0].rec
	switch {
	case in.Anchor != nil && first.Seq > in.Anchor.Seq+1 && !seqAppears(es, in.Anchor.Seq+1):
		return &Finding{Seq: in.Anchor.Seq + 1, Problem: ProblemRemoved,
			Detail: fmt.Sprintf("the run begins at record %d, after the anchor %d", first.Seq, in.Anchor.Seq)}
	case in.Anchor != nil && first.Seq == in.Anchor.Seq+1 && first.Prev != in.Anchor.Hash:
		if intact(in, es, 0) {
			return &Finding{Seq: first.Seq, Problem: ProblemBeforeHead, Detail: "the first record does not follow the signed anchor"}
		}
		return &Finding{Seq: first.Seq, Problem: ProblemEdited, Detail: "the first record does not follow the signed anchor"}
	case in.Anchor == nil && first.Seq == 1 && first.Prev != Genesis:
		return &Finding{Seq: 1, Problem: ProblemEdited, Detail: "the first record of the chain does not start from the genesis hash"}
	case in.Anchor == nil && first.Seq > 1:
		rep.Notes = append(rep.Notes, fmt.Sprintf("the run begins at record %d: records before it are not here (pruned from the store's window: verify them in the export files)", first.Seq))
	}
	return nil
}

// checkChain walks the records in order.
func checkChain(in Input, es []entry, rep *Report) *Finding {
	for i := range es {
		rec := &es[i].rec
		if i > 0 {
			want := es[i-1].rec.Seq + 1
			if f := checkOrder(es, i, want); f != nil {
				return f
			}
			if rec.Prev != es[i-1].hash {
				if intact(in, es, i) {
					return &Finding{Seq: want - 1, Problem: ProblemEdited,
						Detail: fmt.Sprintf("its bytes are not those record %d names (its hash is %.12s…, record %d holds %.12s…)", want, es[i-1].hash, want, rec.Prev)}
				}
				return &Finding{Seq: want, Problem: ProblemEdited, Detail: fmt.Sprintf("it does not follow record %d (its prev hash is not record %d's)", want-1, want-1)}
			}
		}
		if rec.Kind == model.AuditKindCheckpoint {
			if f := checkCheckpoint(in, es, i, rep); f != nil {
				return f
			}
		}
	}
	return nil
}

// checkOrder checks that es[i] is record want.
func checkOrder(es []entry, i int, want int64) *Finding {
	got := es[i].rec.Seq
	switch {
	case got == want:
		return nil
	case got < want || seqAppears(es[i+1:], want):
		return &Finding{Seq: want, Problem: ProblemReordered, Detail: fmt.Sprintf("record %d stands where record %d belongs", got, want)}
	default:
		return &Finding{Seq: want, Problem: ProblemRemoved, Detail: fmt.Sprintf("record %d is followed by record %d", want-1, got)}
	}
}

func seqAppears(es []entry, seq int64) bool {
	for _, e := range es {
		if e.rec.Seq == seq {
			return true
		}
	}
	return false
}

// intact reports whether es[i]'s bytes are vouched for by what follows
// it: the next record's Prev, or the head. When es[i] is intact and its
// Prev does not match the record before, that record was edited.
func intact(in Input, es []entry, i int) bool {
	if i+1 < len(es) {
		return es[i+1].rec.Prev == es[i].hash
	}
	return in.Head != nil && in.Head.Seq == es[i].rec.Seq && in.Head.Hash == es[i].hash
}

// checkCheckpoint verifies the checkpoint es[i] over the record before it.
func checkCheckpoint(in Input, es []entry, i int, rep *Report) *Finding {
	rec := es[i].rec
	cp := rec.Checkpoint
	if cp == nil || cp.Seq != rec.Seq-1 || cp.Hash != rec.Prev {
		return &Finding{Seq: rec.Seq, Problem: ProblemEdited, Detail: "a checkpoint that does not sign the record before it"}
	}
	if err := CheckSignature(in.Key, DomainCheckpoint, *cp); err != nil {
		from := rep.SignedThrough + 1
		if from < rep.First {
			from = rep.First
		}
		return &Finding{Seq: from, Problem: ProblemSignature,
			Detail: fmt.Sprintf("the checkpoint at record %d does not verify (%v): records %d to %d are vouched for by no signature", rec.Seq, err, from, cp.Seq)}
	}
	rep.Checkpoints++
	rep.SignedThrough = cp.Seq
	return nil
}

// checkHead checks the run against the signed head.
func checkHead(in Input, es []entry, rep *Report) *Finding {
	if in.Head == nil {
		rep.Unsigned = countAfter(es, rep.SignedThrough)
		if rep.Unsigned > 0 && !in.Partial {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%d records after record %d are vouched for by the chain alone (no head given): a cut-off end would not show", rep.Unsigned, rep.SignedThrough))
		}
		return nil
	}
	h := *in.Head
	if err := CheckSignature(in.Key, DomainHead, h); err != nil {
		return &Finding{Seq: h.Seq, Problem: ProblemSignature, Detail: "the head is not signed by the audit key: " + err.Error()}
	}
	last := int64(0)
	lastHash := ""
	if len(es) > 0 {
		last, lastHash = es[len(es)-1].rec.Seq, es[len(es)-1].hash
	} else if in.Anchor != nil {
		last, lastHash = in.Anchor.Seq, in.Anchor.Hash
	} else {
		lastHash = Genesis
	}
	switch {
	case h.Seq > last:
		return &Finding{Seq: last + 1, Problem: ProblemTruncated, Detail: fmt.Sprintf("the signed head names record %d; the run ends at %d", h.Seq, last)}
	case h.Seq < last:
		return &Finding{Seq: h.Seq + 1, Problem: ProblemTruncated,
			Detail: fmt.Sprintf("records after %d are not vouched for by the head (rolled back to an older head?)", h.Seq)}
	case h.Hash != lastHash:
		return &Finding{Seq: last, Problem: ProblemEdited, Detail: "the last record is not the one the signed head names"}
	}
	if !in.Now.IsZero() && in.MaxHeadAge > 0 && in.Now.Sub(h.Time) > in.MaxHeadAge {
		return &Finding{Seq: h.Seq + 1, Problem: ProblemStaleHead,
			Detail: fmt.Sprintf("the head was signed at %s, more than %s ago: the servers re-sign it while they run, so records after %d may have been cut off with an older head put back", h.Time.Format(time.RFC3339), in.MaxHeadAge, h.Seq)}
	}
	rep.SignedThrough = h.Seq
	return nil
}

func countAfter(es []entry, seq int64) int {
	n := 0
	for _, e := range es {
		if e.rec.Seq > seq {
			n++
		}
	}
	return n
}

// DomainAnchor is the signature domain of the anchor the pruner leaves
// for the last record it removed from the store.
const DomainAnchor = "anchor"

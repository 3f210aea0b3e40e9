package audit

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// chain builds n records (a checkpoint after every cpEvery others) and
// the signed head over the last.
type chain struct {
	recs   [][]byte
	head   model.AuditSignature
	signer *Signer
}

func newSigner(t testing.TB) *Signer {
	_, priv, err := ed25519.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{7}, 64)))
	if err != nil {
		t.Fatal(err)
	}
	return NewSigner(priv)
}

func buildChain(t testing.TB, n, cpEvery int) *chain {
	s := newSigner(t)
	c := &chain{signer: s}
	prev := Genesis
	seq := int64(0)
	since := 0
	for len(c.recs) < n {
		seq++
		var rec model.AuditRecord
		if cpEvery > 0 && since == cpEvery {
			sig := s.Sign(DomainCheckpoint, seq-1, prev, t0.Add(time.Duration(seq)*time.Second))
			rec = model.AuditRecord{Time: sig.Time, Kind: model.AuditKindCheckpoint, Checkpoint: &sig}
			since = 0
		} else {
			rec = model.AuditRecord{Time: t0.Add(time.Duration(seq) * time.Second), Kind: model.AuditKindAPI,
				Action: "POST /api/v1/vms", Project: "p", Object: fmt.Sprintf("vm/p/v%d", seq), Outcome: "ok", Status: 201}
			since++
		}
		b, h, err := Link(&rec, seq, prev)
		if err != nil {
			t.Fatal(err)
		}
		c.recs = append(c.recs, b)
		prev = h
	}
	c.head = s.Sign(DomainHead, seq, prev, t0.Add(time.Hour))
	return c
}

func (c *chain) input() Input {
	recs := make([][]byte, len(c.recs))
	for i, r := range c.recs {
		recs[i] = append([]byte(nil), r...)
	}
	h := c.head
	return Input{Records: recs, Key: c.signer.Public(), Head: &h, Now: t0.Add(time.Hour + time.Minute), MaxHeadAge: 15 * time.Minute}
}

func TestIntactChainVerifies(t *testing.T) {
	c := buildChain(t, 50, 10)
	rep := Verify(c.input())
	if rep.Bad != nil {
		t.Fatalf("intact chain: %v", rep.Bad)
	}
	if rep.Records != 50 || rep.First != 1 || rep.Last != 50 || rep.Checkpoints != 4 || rep.SignedThrough != 50 {
		t.Fatalf("report %+v", rep)
	}
}

// TestTamperingIsNamed tampers with a stored chain in every way an
// attacker with write access to the store could, and expects verify to
// fail naming the first bad record.
func TestTamperingIsNamed(t *testing.T) {
	c := buildChain(t, 40, 10)
	other := newOther(t)
	tests := []struct {
		name    string
		tamper  func(in *Input)
		seq     int64
		problem string
	}{
		{"edit a record's object", func(in *Input) { in.Records[16] = bytes.Replace(in.Records[16], []byte("v17"), []byte("v99"), 1) }, 17, ProblemEdited},
		{"edit a record's outcome", func(in *Input) { in.Records[4] = bytes.Replace(in.Records[4], []byte(`"ok"`), []byte(`"no"`), 1) }, 5, ProblemEdited},
		{"edit the first record", func(in *Input) { in.Records[0] = bytes.Replace(in.Records[0], []byte("v1\""), []byte("v0\""), 1) }, 1, ProblemEdited},
		{"edit the last record", func(in *Input) { in.Records[39] = bytes.Replace(in.Records[39], []byte("v40"), []byte("v41"), 1) }, 40, ProblemEdited},
		{"edit a record's prev link", func(in *Input) {
			in.Records[20] = bytes.Replace(in.Records[20], []byte(`"prev":"`), []byte(`"prev":"0`), 1)
		}, 21, ProblemEdited},
		{"remove a record", func(in *Input) { in.Records = append(in.Records[:25:25], in.Records[26:]...) }, 26, ProblemRemoved},
		{"remove two records", func(in *Input) { in.Records = append(in.Records[:7:7], in.Records[9:]...) }, 8, ProblemRemoved},
		{"swap two records", func(in *Input) { in.Records[12], in.Records[13] = in.Records[13], in.Records[12] }, 13, ProblemReordered},
		{"move a record back", func(in *Input) {
			r := in.Records[30]
			in.Records = append(in.Records[:30:30], in.Records[31:]...)
			in.Records = append(in.Records[:5:5], append([][]byte{r}, in.Records[5:]...)...)
		}, 6, ProblemReordered},
		{"truncate the end", func(in *Input) { in.Records = in.Records[:35] }, 36, ProblemTruncated},
		{"truncate the end and roll the head back", func(in *Input) {
			in.Records = in.Records[:35]
			h := c.signer.Sign(DomainHead, 35, Hash(in.Records[34]), t0.Add(10*time.Minute))
			in.Head = &h
		}, 36, ProblemStaleHead},
		{"forge the head with another key", func(in *Input) {
			in.Records = in.Records[:35]
			h := other.Sign(DomainHead, 35, Hash(in.Records[34]), t0.Add(time.Hour))
			in.Head = &h
		}, 35, ProblemSignature},
		{"rewrite a suffix of the chain consistently", func(in *Input) {
			prev := Hash(in.Records[14])
			for i := 15; i < 40; i++ {
				rec := decodeRecord(t, in.Records[i])
				if rec.Object == "vm/p/v16" {
					rec.Object = "vm/p/forged"
				}
				if rec.Checkpoint != nil {
					rec.Checkpoint.Hash = prev
				}
				b, h, _ := Link(&rec, rec.Seq, prev)
				in.Records[i], prev = b, h
			}
			in.Head.Hash = prev
		}, 11, ProblemSignature},
		{"replace a record with garbage", func(in *Input) { in.Records[3] = []byte(`{"not":"a record"}`) }, 4, ProblemMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := c.input()
			tt.tamper(&in)
			rep := Verify(in)
			if rep.Bad == nil {
				t.Fatalf("tampered chain verifies: %+v", rep)
			}
			if rep.Bad.Seq != tt.seq || rep.Bad.Problem != tt.problem {
				t.Fatalf("finding %v; want record %d %s", rep.Bad, tt.seq, tt.problem)
			}
			if !errors.Is(rep.Err(), ErrTampered) {
				t.Fatalf("error %v is not ErrTampered", rep.Err())
			}
		})
	}
}

func decodeRecord(t *testing.T, b []byte) model.AuditRecord {
	t.Helper()
	var r model.AuditRecord
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAnchorAfterPruning(t *testing.T) {
	c := buildChain(t, 30, 10)
	anchor := c.signer.Sign(DomainAnchor, 10, Hash(c.recs[9]), t0)
	tests := []struct {
		name string
		from int
		anc  model.AuditSignature
		seq  int64
	}{
		{"window after the anchor", 10, anchor, 0},
		{"a record removed at the window's start", 11, anchor, 11},
		{"an anchor of another key", 10, newOther(t).Sign(DomainAnchor, 10, Hash(c.recs[9]), t0), 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := c.input()
			in.Records = in.Records[tt.from:]
			in.Anchor = &tt.anc
			rep := Verify(in)
			switch {
			case tt.seq == 0 && rep.Bad != nil:
				t.Fatalf("verify: %v", rep.Bad)
			case tt.seq != 0 && (rep.Bad == nil || rep.Bad.Seq != tt.seq):
				t.Fatalf("finding %v; want record %d", rep.Bad, tt.seq)
			}
		})
	}
	in := c.input()
	in.Records = in.Records[10:]
	rep := Verify(in)
	if rep.Bad != nil || len(rep.Notes) == 0 || !strings.Contains(rep.Notes[0], "begins at record 11") {
		t.Fatalf("a window without anchor: %+v", rep)
	}
}

func newOther(t *testing.T) *Signer {
	_, priv, _ := ed25519.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{3}, 64)))
	return NewSigner(priv)
}

func TestVerifyFiles(t *testing.T) {
	c := buildChain(t, 30, 10)
	dir := t.TempDir()
	write := func(name string, recs [][]byte) string {
		p := filepath.Join(dir, name)
		var buf bytes.Buffer
		for _, r := range recs {
			buf.Write(r)
			buf.WriteByte('\n')
		}
		if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := write("a.jsonl", c.recs[:12]), write("b.jsonl", c.recs[12:])
	rep, err := VerifyFiles(FileInput{Paths: []string{a, b}, Key: c.signer.Public(), Head: &c.head})
	if err != nil || rep.Bad != nil || rep.Records != 30 || rep.SignedThrough != 30 {
		t.Fatalf("files: %+v %v", rep, err)
	}
	if seq, h, err := LastRecord(b); err != nil || seq != 30 || h != c.head.Hash {
		t.Fatalf("last record %d %s %v", seq, h, err)
	}
	gap := write("c.jsonl", c.recs[14:])
	rep, err = VerifyFiles(FileInput{Paths: []string{a, gap}, Key: c.signer.Public()})
	if err != nil || rep.Bad == nil || rep.Bad.Seq != 13 || !strings.Contains(rep.Bad.Detail, "c.jsonl") {
		t.Fatalf("a gap between files: %+v %v", rep.Bad, err)
	}
}

// BenchmarkVerify measures verification speed in records per second
// (records of a realistic size, a checkpoint every 1,000).
func BenchmarkVerify(b *testing.B) {
	c := buildChain(b, 20000, 1000)
	in := c.input()
	b.ResetTimer()
	for b.Loop() {
		if rep := Verify(in); rep.Bad != nil {
			b.Fatal(rep.Bad)
		}
	}
	b.ReportMetric(float64(len(c.recs))*float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

package cli

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/audit"
	"github.com/vpool/vpool/internal/model"
)

// fakeChain is an audit trail the fake server serves: records linked
// and signed as the servers do, which a test may tamper with.
type fakeChain struct {
	mu     sync.Mutex
	signer *audit.Signer
	recs   [][]byte
	head   model.AuditHead
	anchor *model.AuditSignature
	first  int // index of the first record still "in the store"
}

var chains sync.Map // *fakeServer → *fakeChain

func (f *fakeServer) chain() *fakeChain {
	c, _ := chains.LoadOrStore(f, &fakeChain{})
	fc := c.(*fakeChain)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.signer == nil {
		_, priv, _ := ed25519.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{1}, 64)))
		fc.signer = audit.NewSigner(priv)
	}
	return fc
}

// add appends n records (a checkpoint every 10) and signs the head.
func (c *fakeChain) add(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := audit.Genesis
	if len(c.recs) > 0 {
		prev = audit.Hash(c.recs[len(c.recs)-1])
	}
	for range n {
		seq := int64(len(c.recs) + 1)
		rec := model.AuditRecord{Time: now.Add(time.Duration(seq) * time.Second), Kind: model.AuditKindAPI, Action: "POST /api/v1/vms",
			Project: "default", Object: fmt.Sprintf("vm/default/v%d", seq), Outcome: "ok", Status: 201,
			Actor: &model.AuditActor{TokenID: "tok1", Role: model.RoleMember, Source: "127.0.0.1:5000"}}
		if seq%10 == 0 {
			sig := c.signer.Sign(audit.DomainCheckpoint, seq-1, prev, rec.Time)
			rec = model.AuditRecord{Time: rec.Time, Kind: model.AuditKindCheckpoint, Checkpoint: &sig}
		}
		b, h, _ := audit.Link(&rec, seq, prev)
		c.recs = append(c.recs, b)
		prev = h
	}
	c.head = model.AuditHead{AuditSignature: c.signer.Sign(audit.DomainHead, int64(len(c.recs)), prev, now.Add(-time.Minute))}
}

// prune drops the first n records from "the store", leaving a signed anchor.
func (c *fakeChain) prune(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.first = n
	a := c.signer.Sign(audit.DomainAnchor, int64(n), audit.Hash(c.recs[n-1]), now)
	c.anchor = &a
}

func (f *fakeServer) auditHandlers() map[string]handler {
	c := f.chain()
	return map[string]handler{
		"GET /api/v1/audit": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			c.mu.Lock()
			defer c.mu.Unlock()
			out := api.AuditList{Items: []model.AuditRecord{}, Head: c.head.Seq}
			for i := len(c.recs) - 1; i >= c.first && len(out.Items) < 3; i-- {
				var rec model.AuditRecord
				_ = json.Unmarshal(c.recs[i], &rec)
				out.Items = append(out.Items, rec)
			}
			return out, nil
		},
		"GET /api/v1/audit/records": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			c.mu.Lock()
			defer c.mu.Unlock()
			from, _ := strconv.Atoi(r.URL.Query().Get("from"))
			out := api.AuditRecords{Records: []json.RawMessage{}}
			for i := max(from-1, c.first); i < len(c.recs) && len(out.Records) < 7; i++ {
				out.Records = append(out.Records, c.recs[i])
				if len(out.Records) == 7 && i+1 < len(c.recs) {
					out.Next = int64(i + 2)
				}
			}
			return out, nil
		},
		"GET /api/v1/audit/head": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			c.mu.Lock()
			defer c.mu.Unlock()
			return api.AuditHeadView{Head: c.head, Anchor: c.anchor, MaxHeadAge: 600,
				Key: model.AuditKey{KeyID: c.signer.KeyID(), PublicKey: audit.EncodePublicKey(c.signer.Public())}}, nil
		},
		"GET /api/v1/audit/key": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return model.AuditKey{KeyID: c.signer.KeyID(), PublicKey: audit.EncodePublicKey(c.signer.Public())}, nil
		},
	}
}

func TestAuditList(t *testing.T) {
	f := newFake(t)
	f.chain().add(12)
	res := f.cli(t, "audit", "list")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	golden(t, "audit-list", res.stdout)
}

// TestAuditVerifyNamesTheFirstBadRecord runs `vpool audit verify`
// against a served chain, intact and then tampered with in each way.
func TestAuditVerifyNamesTheFirstBadRecord(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(c *fakeChain)
		want   string
	}{
		{"intact", func(c *fakeChain) {}, ""},
		{"pruned window", func(c *fakeChain) { c.prune(8) }, ""},
		{"edited", func(c *fakeChain) { c.recs[4] = bytes.Replace(c.recs[4], []byte(`v5"`), []byte(`v6"`), 1) }, "FAILED at record 5 (edited)"},
		{"removed", func(c *fakeChain) { c.recs = append(c.recs[:14:14], c.recs[15:]...) }, "FAILED at record 15 (removed)"},
		{"reordered", func(c *fakeChain) { c.recs[2], c.recs[3] = c.recs[3], c.recs[2] }, "FAILED at record 3 (reordered)"},
		{"truncated", func(c *fakeChain) { c.recs = c.recs[:20] }, "FAILED at record 21 (truncated)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			c := f.chain()
			c.add(25)
			tt.tamper(c)
			res := f.cli(t, "audit", "verify")
			if tt.want == "" {
				if res.code != 0 || !strings.HasPrefix(res.stdout, "OK: ") {
					t.Fatalf("exit %d: %s %s", res.code, res.stdout, res.stderr)
				}
				return
			}
			if res.code == 0 || !strings.Contains(res.stdout, tt.want) {
				t.Fatalf("exit %d, stdout %q; want %q", res.code, res.stdout, tt.want)
			}
		})
	}
}

// TestAuditExportAppends: export appends what the file lacks, the file
// verifies offline with the pinned key, and an edited file does not.
func TestAuditExportAppends(t *testing.T) {
	f := newFake(t)
	c := f.chain()
	c.add(15)
	file := filepath.Join(t.TempDir(), "trail.jsonl")
	if res := f.cli(t, "audit", "export", "--file", file); res.code != 0 || !strings.Contains(res.stdout, "appended 15 records (1 to 15)") {
		t.Fatalf("first export: %d %q %q", res.code, res.stdout, res.stderr)
	}
	c.add(10)
	if res := f.cli(t, "audit", "export", "--file", file); res.code != 0 || !strings.Contains(res.stdout, "appended 10 records (16 to 25)") {
		t.Fatalf("second export: %d %q %q", res.code, res.stdout, res.stderr)
	}
	if res := f.cli(t, "audit", "export", "--file", file); res.code != 0 || !strings.Contains(res.stdout, "up to date") {
		t.Fatalf("third export: %d %q", res.code, res.stdout)
	}
	keyFile := filepath.Join(t.TempDir(), "audit.pub")
	if err := os.WriteFile(keyFile, []byte(audit.EncodePublicKey(c.signer.Public())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if res := f.cli(t, "audit", "verify", "--file", file, "--key", keyFile); res.code != 0 || !strings.Contains(res.stdout, "OK: 25 records") {
		t.Fatalf("verify the file: %d %q %q", res.code, res.stdout, res.stderr)
	}
	b, _ := os.ReadFile(file)
	if err := os.WriteFile(file, bytes.Replace(b, []byte(`/v7"`), []byte(`/v8"`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := f.cli(t, "audit", "verify", "--file", file, "--key", keyFile); res.code == 0 || !strings.Contains(res.stdout, "FAILED at record 7 (edited)") {
		t.Fatalf("verify an edited file: %d %q", res.code, res.stdout)
	}
	// a store that pruned past the file's end: export says where the records are
	gap := filepath.Join(t.TempDir(), "gap.jsonl")
	if err := os.WriteFile(gap, append(c.recs[0], '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	c.prune(20)
	if res := f.cli(t, "audit", "export", "--file", gap); res.code == 0 || !strings.Contains(res.stderr, "export directory") {
		t.Fatalf("export past a gap: %d %q", res.code, res.stderr)
	}
}

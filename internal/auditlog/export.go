package auditlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vpool/vpool/internal/audit"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Defaults of ExportConfig.
const (
	DefaultWindow         = 20000  // records kept in the store
	DefaultSegment        = 100000 // records per export file
	DefaultExportPerPass  = 5000
	DefaultPrunePerPass   = 2000
	maxDeletesPerTxn      = 100 // batches (stored values) per pruning transaction
	exportFilePrefix      = "audit-"
	exportFileSuffix      = ".jsonl"
	defaultHardCapWindows = 4
)

// ExportConfig configures the leader's exporter and pruner.
type ExportConfig struct {
	// Dir receives the export files (append-only, one record per line);
	// "" exports nothing and the store keeps Window records.
	Dir string
	// Window is how many records the store keeps; older ones are pruned
	// once exported. HardCap bounds the store when export falls behind
	// (default 4 × Window): records beyond it are pruned unexported and a
	// gap record says so.
	Window, HardCap int
	// Segment is how many records one export file takes.
	Segment int
	Logger  *slog.Logger
}

// Exporter appends the chain to export files and prunes the store. It
// runs on the leader (controller.Config.Tasks); the store it is handed is
// the leadership term's, so a deposed leader prunes nothing.
type Exporter struct {
	cfg ExportConfig
	log *Log
	lg  *slog.Logger
	// the export file being appended to, as this process knows it
	file     string
	fileLast int64
	fileRecs int
}

// mark is the export watermark (store.AuditExportedKey).
type mark struct {
	Seq    int64  `json:"seq"`
	Hash   string `json:"hash"`
	Server string `json:"server,omitempty"`
	File   string `json:"file,omitempty"`
}

// NewExporter returns the exporter of l's chain.
func NewExporter(l *Log, cfg ExportConfig) *Exporter {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.HardCap < cfg.Window {
		cfg.HardCap = defaultHardCapWindows * cfg.Window
	}
	if cfg.Segment <= 0 {
		cfg.Segment = DefaultSegment
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Exporter{cfg: cfg, log: l, lg: cfg.Logger.With("component", "audit-export")}
}

// Step exports what is new and prunes what the window no longer holds.
func (e *Exporter) Step(ctx context.Context, st store.Store) error {
	head, _, err := ReadHead(ctx, st)
	if err != nil {
		return err
	}
	m, mrev, err := readMark(ctx, st)
	if err != nil {
		return err
	}
	if e.cfg.Dir != "" && head.Seq > m.Seq {
		if m, err = e.export(ctx, st, m, mrev, head.Seq); err != nil {
			return err
		}
	}
	return e.prune(ctx, st, head.Seq, m.Seq)
}

func readMark(ctx context.Context, st store.Store) (mark, int64, error) {
	var m mark
	kv, err := st.Get(ctx, store.AuditExportedKey)
	if errors.Is(err, store.ErrNotFound) {
		return m, 0, nil
	}
	if err != nil {
		return m, 0, fmt.Errorf("auditlog: read export mark: %w", err)
	}
	if err := json.Unmarshal(kv.Value, &m); err != nil {
		return m, 0, fmt.Errorf("auditlog: decode export mark: %w", err)
	}
	return m, kv.ModRev, nil
}

// export appends records m.Seq+1 … (at most DefaultExportPerPass) to the
// current export file, syncs it, then moves the mark.
func (e *Exporter) export(ctx context.Context, st store.Store, m mark, mrev int64, top int64) (mark, error) {
	recs, err := Range(ctx, st, m.Seq+1, min(top, m.Seq+DefaultExportPerPass), 0)
	if err != nil || len(recs) == 0 {
		return m, err
	}
	if recs[0].Seq != m.Seq+1 {
		e.lg.Warn("audit records were pruned before export", "from", m.Seq+1, "to", recs[0].Seq-1)
	}
	path, err := e.segment(m.Seq, recs[0].Seq)
	if err != nil {
		return m, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return m, fmt.Errorf("auditlog: export: %w", err)
	}
	var buf []byte
	for _, r := range recs {
		buf = append(append(buf, r.Bytes...), '\n')
	}
	_, werr := f.Write(buf)
	serr := f.Sync()
	if cerr := f.Close(); werr == nil && serr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = serr
	}
	if werr != nil {
		e.file = "" // re-read the file's end next time
		return m, fmt.Errorf("auditlog: export to %s: %w", path, werr)
	}
	last := recs[len(recs)-1]
	e.file, e.fileLast, e.fileRecs = path, last.Seq, e.fileRecs+len(recs)
	nm := mark{Seq: last.Seq, Hash: audit.Hash(last.Bytes), Server: e.log.cfg.Server, File: filepath.Base(path)}
	b, _ := json.Marshal(nm)
	ok, _, err := st.Txn(ctx, []store.Cond{store.IfRev(store.AuditExportedKey, mrev)}, []store.Op{store.Put(store.AuditExportedKey, b)})
	if err != nil {
		return m, fmt.Errorf("auditlog: move export mark: %w", err)
	}
	if !ok {
		return m, errors.New("auditlog: the export mark moved under the exporter")
	}
	return nm, nil
}

// segment picks the file to append records after seq to: the newest
// file of the directory when it ends at seq and has room, else a new one
// named by the first record it will hold (another server may have
// exported the records before: its directory holds them).
func (e *Exporter) segment(seq, first int64) (string, error) {
	if e.file == "" {
		if err := os.MkdirAll(e.cfg.Dir, 0o700); err != nil {
			return "", fmt.Errorf("auditlog: export dir: %w", err)
		}
		files, err := ExportFiles(e.cfg.Dir)
		if err != nil {
			return "", err
		}
		if len(files) > 0 {
			p := files[len(files)-1]
			last, n, err := fileEnd(p)
			if err != nil {
				return "", err
			}
			e.file, e.fileLast, e.fileRecs = p, last, n
		}
	}
	if e.file != "" && e.fileLast == seq && e.fileRecs < e.cfg.Segment {
		return e.file, nil
	}
	e.file, e.fileRecs = filepath.Join(e.cfg.Dir, fmt.Sprintf("%s%020d%s", exportFilePrefix, first, exportFileSuffix)), 0
	return e.file, nil
}

// fileEnd reads an export file's last sequence number and its count.
func fileEnd(p string) (int64, int, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, 0, fmt.Errorf("auditlog: %w", err)
	}
	defer f.Close()
	recs, err := audit.ReadRecords(f)
	if err != nil || len(recs) == 0 {
		return 0, 0, err
	}
	var last struct {
		Seq int64 `json:"seq"`
	}
	if err := json.Unmarshal(recs[len(recs)-1], &last); err != nil {
		return 0, 0, fmt.Errorf("auditlog: the last line of %s is not a record: %w", p, err)
	}
	return last.Seq, len(recs), nil
}

// ExportFiles lists a directory's export files in chain order.
func ExportFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("auditlog: %w", err)
	}
	var out []string
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, exportFilePrefix) && strings.HasSuffix(n, exportFileSuffix) {
			out = append(out, filepath.Join(dir, n))
		}
	}
	sort.Strings(out)
	return out, nil
}

// prune deletes records the window no longer holds: exported ones (all
// of them without an export directory), or beyond the hard cap, leaving a
// signed anchor naming the last record deleted.
func (e *Exporter) prune(ctx context.Context, st store.Store, head, exported int64) error {
	to := head - int64(e.cfg.Window)
	if e.cfg.Dir != "" {
		to = min(to, exported)
		if over := head - int64(e.cfg.HardCap); over > to {
			if err := e.log.Record(ctx, model.AuditRecord{Kind: model.AuditKindGap, Outcome: "failed",
				Reason: fmt.Sprintf("records %d to %d were pruned before they were exported (the export fell behind)", exported+1, over),
				Gap:    &model.AuditGap{From: exported + 1, To: over}}); err != nil {
				return err
			}
			to = over
		}
	}
	anchor, arev, err := ReadAnchor(ctx, st)
	if err != nil {
		return err
	}
	from := int64(1)
	if anchor != nil {
		from = anchor.Seq + 1
	}
	to = min(to, from+DefaultPrunePerPass-1)
	if to < from {
		return nil
	}
	// whole batches only: a batch is one stored value
	var victims []batch
	for b := max(from/store.AuditBucket-1, 0); b <= to/store.AuditBucket; b++ {
		bs, err := bucketBatches(ctx, st, b)
		if err != nil {
			return err
		}
		for _, bt := range bs {
			if bt.last() >= from && bt.last() <= to {
				victims = append(victims, bt)
			}
		}
	}
	for len(victims) > 0 {
		n := min(len(victims), maxDeletesPerTxn)
		chunk := victims[:n]
		victims = victims[n:]
		end := chunk[n-1]
		sig := e.log.Signer().Sign(audit.DomainAnchor, end.last(), audit.Hash(end.recs[len(end.recs)-1]), e.log.cfg.Clock())
		b, _ := json.Marshal(sig)
		ops := make([]store.Op, 0, n+1)
		for _, bt := range chunk {
			ops = append(ops, store.Delete(bt.key))
		}
		ops = append(ops, store.Put(store.AuditAnchorKey, b))
		ok, rev, err := st.Txn(ctx, []store.Cond{store.IfRev(store.AuditAnchorKey, arev)}, ops)
		if err != nil {
			return fmt.Errorf("auditlog: prune: %w", err)
		}
		if !ok {
			return errors.New("auditlog: the anchor moved under the pruner")
		}
		arev = rev
	}
	return nil
}

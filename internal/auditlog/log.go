// Package auditlog keeps the audit trail in the store: a buffered,
// ordered appender (Log) that links records into the hash chain in
// batches, one transaction and one stored value per batch, guarded on
// the chain's head, with a signed checkpoint every so many records or
// minutes and a head re-signed while idle; intents, which carry a
// request's record in the transaction of its change so that it is never
// lost (carry.go); readers of ranges and of the newest records; and the
// leader's exporter, which appends records to append-only files and then
// prunes the store's window, leaving a signed anchor (docs/audit.md).
//
// It imports internal/audit (the chain and signatures), internal/store,
// internal/model and internal/pki (the signing key is sealed like the CA
// key); never the server or the controllers, which hand it records.
package auditlog

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/audit"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Defaults of Config.
const (
	DefaultQueue              = 8192
	DefaultMaxBatch           = 100 // records per transaction (one value; plus an intent's delete each: etcd allows 128 operations)
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 5 * time.Minute
	DefaultHeadRefresh        = time.Minute
	// DefaultLinger is how long a batch waits for more records after its
	// first record that no intent carries: a write per record would
	// double the store's writes under a stream of single requests; 25 ms
	// gathers several (and is, with one transaction's latency, the loss
	// window of such records if the process dies).
	DefaultLinger = 25 * time.Millisecond
	// DefaultCarriedLinger is how long a batch of carried records only
	// (their intents are in the store with their change: nothing is lost
	// if the process dies) waits for more: long batches cost the store
	// one transaction per hundred creates rather than per five.
	DefaultCarriedLinger = 500 * time.Millisecond
	// DefaultRecoverAfter is when an intent of another server is taken
	// for one whose record will never come (its server died for good):
	// a live server writes a record within seconds or drops it.
	DefaultRecoverAfter = 10 * time.Minute
	// DefaultMaxHeadAge is what verify allows for the head's age: a few
	// refreshes missed (a leaderless minute, a slow store) still pass.
	DefaultMaxHeadAge = 10 * time.Minute
)

// Config configures a Log.
type Config struct {
	Store  store.Store
	Signer *audit.Signer
	// Server names the writer in each record.
	Server string
	Logger *slog.Logger
	Clock  func() time.Time
	// Queue is how many records may wait for the store; Record blocks
	// beyond it.
	Queue    int
	MaxBatch int
	// CheckpointEvery and CheckpointInterval: a checkpoint follows this
	// many records, or this much time with records since the last one.
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// HeadRefresh is how often an idle head is signed again.
	HeadRefresh time.Duration
	// Linger is how long a batch waits for more records (negative: not
	// at all; 0: DefaultLinger); CarriedLinger the same for a batch of
	// carried records only (0: DefaultCarriedLinger).
	Linger, CarriedLinger time.Duration
	// RecoverAfter: an intent this old is linked by whichever server
	// sees it (0: DefaultRecoverAfter). A server's own intents of an
	// earlier run are linked when it starts.
	RecoverAfter time.Duration
}

func (c *Config) defaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Queue <= 0 {
		c.Queue = DefaultQueue
	}
	if c.MaxBatch <= 0 || c.MaxBatch > DefaultMaxBatch {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.CheckpointEvery <= 0 {
		c.CheckpointEvery = DefaultCheckpointEvery
	}
	if c.CheckpointInterval <= 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.HeadRefresh <= 0 {
		c.HeadRefresh = DefaultHeadRefresh
	}
	if c.Linger == 0 {
		c.Linger = DefaultLinger
	}
	if c.CarriedLinger == 0 {
		c.CarriedLinger = DefaultCarriedLinger
		if c.Linger < 0 {
			c.CarriedLinger = c.Linger
		}
	}
	if c.CarriedLinger > 0 && c.CarriedLinger < c.Linger {
		c.CarriedLinger = c.Linger
	}
	if c.RecoverAfter <= 0 {
		c.RecoverAfter = DefaultRecoverAfter
	}
}

// item is one queued record, or a flush barrier (done set). intent is
// the key of the record's intent when one was written with its change
// (the batch deletes it).
type item struct {
	rec    model.AuditRecord
	intent string
	done   chan struct{}
}

// Log appends audit records to the store. Record queues; Run writes.
// Records queued but not yet written are lost if the process dies —
// except those whose intent went to the store with their change
// (RecordCarried): the next run links those (docs/audit.md).
type Log struct {
	cfg   Config
	log   *slog.Logger
	queue chan item

	mu      sync.Mutex
	head    model.AuditHead
	headRev int64 // 0: not read yet (or absent)
	known   bool

	boot    string       // this run's id, in its intents' keys
	intents atomic.Int64 // intents made by this run

	startOnce sync.Once
	stop      context.CancelFunc
	stopped   chan struct{}

	dropped   atomic.Int64 // records refused because the queue stayed full (reset when a gap record counts them)
	lost      atomic.Int64 // records dropped, ever
	written   atomic.Int64
	batches   atomic.Int64
	conflicts atomic.Int64
	recovered atomic.Int64
}

// New returns a Log; nothing is written until Run.
func New(cfg Config) (*Log, error) {
	if cfg.Store == nil || cfg.Signer == nil {
		return nil, errors.New("auditlog: config needs a Store and a Signer")
	}
	cfg.defaults()
	var boot [6]byte
	if _, err := rand.Read(boot[:]); err != nil {
		return nil, fmt.Errorf("auditlog: boot id: %w", err)
	}
	return &Log{cfg: cfg, log: cfg.Logger.With("component", "audit"), queue: make(chan item, cfg.Queue),
		boot: hex.EncodeToString(boot[:])}, nil
}

// Signer is the log's signer (the exporter signs anchors with it).
func (l *Log) Signer() *audit.Signer { return l.cfg.Signer }

// ErrQueueFull says a record was dropped: the store did not take records
// for as long as the caller could wait. The next batch carries a gap
// record that counts it.
var ErrQueueFull = errors.New("auditlog: queue full, record dropped")

// Record queues rec (Seq and Prev are set when it is written; Time and
// Server when empty). It waits while the queue is full, until ctx ends.
func (l *Log) Record(ctx context.Context, rec model.AuditRecord) error {
	if rec.Time.IsZero() {
		rec.Time = l.cfg.Clock()
	}
	if rec.Server == "" {
		rec.Server = l.cfg.Server
	}
	select {
	case l.queue <- item{rec: rec}:
		return nil
	default:
	}
	select {
	case l.queue <- item{rec: rec}:
		return nil
	case <-ctx.Done():
		l.dropped.Add(1)
		l.lost.Add(1)
		return ErrQueueFull
	}
}

// RecordWithin is Record waiting at most d for room in the queue (no
// context to make on the fast path: a request's record costs no timer).
func (l *Log) RecordWithin(rec model.AuditRecord, d time.Duration) error {
	return l.RecordCarried(rec, "", d)
}

// RecordCarried is RecordWithin for the record of a request whose
// intent (Intent) went to the store with its change: the batch that
// links rec deletes the intent, in the same transaction. A dropped
// record's intent stays, and is linked later (recover).
func (l *Log) RecordCarried(rec model.AuditRecord, intent string, d time.Duration) error {
	if rec.Time.IsZero() {
		rec.Time = l.cfg.Clock()
	}
	if rec.Server == "" {
		rec.Server = l.cfg.Server
	}
	it := item{rec: rec, intent: intent}
	select {
	case l.queue <- it:
		return nil
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case l.queue <- it:
		return nil
	case <-t.C:
		if intent == "" { // a carried record is linked from its intent later
			l.dropped.Add(1)
			l.lost.Add(1)
		}
		return ErrQueueFull
	}
}

// Flush waits until every record queued before it is in the store (or
// ctx ends). Run must be running.
func (l *Log) Flush(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case l.queue <- item{done: done}:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats are counters of the log (metrics, benchmarks).
type Stats struct {
	Written, Batches, Conflicts, Dropped int64
	// Recovered counts records linked from intents whose record never came.
	Recovered int64
	Queued    int
}

// Stats returns the counters.
func (l *Log) Stats() Stats {
	return Stats{Written: l.written.Load(), Batches: l.batches.Load(), Conflicts: l.conflicts.Load(),
		Dropped: l.lost.Load(), Recovered: l.recovered.Load(), Queued: len(l.queue)}
}

// Start runs the writer in the background until Close.
func (l *Log) Start() {
	l.startOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		l.stop, l.stopped = cancel, make(chan struct{})
		go func() { defer close(l.stopped); l.Run(ctx) }()
	})
}

// Close stops a writer Start started, after it wrote what was queued.
func (l *Log) Close() {
	if l != nil && l.stop != nil {
		l.stop()
		<-l.stopped
	}
}

// Run writes queued records until ctx ends, then writes what is still
// queued (with a short deadline of its own) and returns. It first links
// the intents an earlier run of this server left (recoverIntents).
func (l *Log) Run(ctx context.Context) {
	if err := l.recoverIntents(ctx); err != nil && ctx.Err() == nil {
		l.log.Warn("audit intents not recovered", "err", err)
	}
	tick := time.NewTicker(l.cfg.HeadRefresh / 4)
	defer tick.Stop()
	for {
		select {
		case it := <-l.queue:
			l.writeBatch(ctx, it)
		case <-tick.C:
			if err := l.refresh(ctx); err != nil && ctx.Err() == nil {
				l.log.Warn("audit head refresh failed", "err", err)
			}
			if err := l.recoverIntents(ctx); err != nil && ctx.Err() == nil {
				l.log.Warn("audit intents not recovered", "err", err)
			}
		case <-ctx.Done():
			l.drain()
			return
		}
	}
}

// drain writes what is queued at shutdown.
func (l *Log) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		select {
		case it := <-l.queue:
			l.writeBatch(ctx, it)
		default:
			return
		}
	}
}

// writeBatch takes first and whatever else is queued (up to MaxBatch
// records) and commits them.
func (l *Log) writeBatch(ctx context.Context, first item) {
	recs := make([]model.AuditRecord, 0, l.cfg.MaxBatch)
	var intents []string
	var barriers []chan struct{}
	uncarried := false
	add := func(it item) {
		switch {
		case it.done != nil:
			barriers = append(barriers, it.done)
		case it.intent != "":
			recs, intents = append(recs, it.rec), append(intents, it.intent)
		default:
			recs, uncarried = append(recs, it.rec), true
		}
	}
	add(first)
	l.fill(ctx, add, func() bool { return len(recs) < l.cfg.MaxBatch && len(barriers) == 0 }, func() bool { return uncarried })
fill:
	for len(recs) < l.cfg.MaxBatch {
		select {
		case it := <-l.queue:
			add(it)
		default:
			break fill
		}
	}
	if n := l.dropped.Swap(0); n > 0 {
		recs = append(recs, model.AuditRecord{Time: l.cfg.Clock(), Kind: model.AuditKindGap, Server: l.cfg.Server,
			Outcome: "failed", Reason: fmt.Sprintf("%d records were dropped: the store did not take them in time", n)})
	}
	if len(recs) > 0 {
		for attempt := 0; ; attempt++ {
			err := l.commit(ctx, recs, intents)
			if err == nil {
				break
			}
			if ctx.Err() != nil || attempt >= 20 {
				// the intents stay: their records are linked later (recoverIntents)
				l.dropped.Add(int64(len(recs) - len(intents)))
				l.lost.Add(int64(len(recs) - len(intents)))
				l.log.Error("audit records not written", "records", len(recs), "intents", len(intents), "err", err)
				break
			}
			sleep(ctx, time.Duration(10<<min(attempt, 6))*time.Millisecond)
		}
	}
	for _, b := range barriers {
		close(b)
	}
}

// fill waits for more records while more is wanted: up to Linger once
// the batch holds a record no intent carries (hurry), else up to
// CarriedLinger (a flush barrier ends the wait: someone waits for the
// store).
func (l *Log) fill(ctx context.Context, add func(item), more, hurry func() bool) {
	wait := l.cfg.CarriedLinger
	if hurry() {
		wait = l.cfg.Linger
	}
	if wait <= 0 || !more() {
		return
	}
	deadline := time.Now().Add(wait)
	t := time.NewTimer(wait)
	defer t.Stop()
	hurried := hurry()
	for more() {
		select {
		case it := <-l.queue:
			add(it)
			if !hurried && hurry() {
				hurried = true
				if l.cfg.Linger <= 0 {
					return
				}
				if d := time.Now().Add(l.cfg.Linger); d.Before(deadline) {
					deadline = d
					t.Reset(time.Until(d))
				}
			}
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// errConflict says another writer moved the head first.
var errConflict = errors.New("auditlog: head moved")

// commit links recs after the head and writes them, as one value, with
// the new signed head in one transaction guarded on the head's revision,
// deleting the intents that carried them; a lost race re-reads the head
// and links again.
func (l *Log) commit(ctx context.Context, recs []model.AuditRecord, intents []string) error {
	for range 50 {
		head, rev, err := l.current(ctx)
		if err != nil {
			return err
		}
		ops, nh, err := l.link(head, recs)
		if err != nil {
			return err
		}
		for _, k := range intents {
			ops = append(ops, store.Delete(k))
		}
		ok, nrev, err := l.put(ctx, []store.Cond{store.IfRev(store.AuditHeadKey, rev)}, nh, ops)
		if err != nil {
			return err
		}
		if ok {
			l.written.Add(int64(len(recs)))
			l.batches.Add(1)
			l.setHead(nh, nrev)
			return nil
		}
		l.conflicts.Add(1)
		l.forget()
	}
	return errConflict
}

// link chains recs after head: the op that stores them (one value, the
// records' bytes one per line, with checkpoints where due) and the new
// head, signed.
func (l *Log) link(head model.AuditHead, recs []model.AuditRecord) ([]store.Op, model.AuditHead, error) {
	now := l.cfg.Clock()
	seq, prev := head.Seq, head.Hash
	if prev == "" {
		prev = audit.Genesis
	}
	var buf []byte
	put := func(rec model.AuditRecord) error {
		b, h, err := audit.Link(&rec, seq+1, prev)
		if err != nil {
			return err
		}
		seq, prev = seq+1, h
		if buf == nil {
			buf = make([]byte, 0, len(b)*(len(recs)+1)+len(recs))
		} else {
			buf = append(buf, '\n')
		}
		buf = append(buf, b...)
		return nil
	}
	for _, rec := range recs {
		if err := put(rec); err != nil {
			return nil, head, err
		}
		if seq-head.Checkpoint >= int64(l.cfg.CheckpointEvery) {
			if err := l.checkpoint(&head, seq, prev, now, put); err != nil {
				return nil, head, err
			}
		}
	}
	if seq > head.Checkpoint && now.Sub(head.CheckpointAt) >= l.cfg.CheckpointInterval {
		if err := l.checkpoint(&head, seq, prev, now, put); err != nil {
			return nil, head, err
		}
	}
	ops := make([]store.Op, 0, 2+len(recs))
	if seq > head.Seq {
		ops = append(ops, store.Put(store.AuditRecordKey(head.Seq+1), buf))
	}
	nh := model.AuditHead{AuditSignature: l.cfg.Signer.Sign(audit.DomainHead, seq, prev, now),
		RefreshSeconds: int(l.cfg.HeadRefresh / time.Second), Checkpoint: head.Checkpoint, CheckpointAt: head.CheckpointAt}
	return ops, nh, nil
}

// checkpoint appends a checkpoint record signing (seq, prev).
func (l *Log) checkpoint(head *model.AuditHead, seq int64, prev string, now time.Time, put func(model.AuditRecord) error) error {
	sig := l.cfg.Signer.Sign(audit.DomainCheckpoint, seq, prev, now)
	if err := put(model.AuditRecord{Time: sig.Time, Kind: model.AuditKindCheckpoint, Server: l.cfg.Server, Checkpoint: &sig}); err != nil {
		return err
	}
	head.Checkpoint, head.CheckpointAt = seq+1, now
	return nil
}

// put writes ops and the head if conds hold.
func (l *Log) put(ctx context.Context, conds []store.Cond, nh model.AuditHead, ops []store.Op) (bool, int64, error) {
	hb, err := json.Marshal(nh)
	if err != nil {
		return false, 0, fmt.Errorf("auditlog: encode head: %w", err)
	}
	ops = append(ops, store.Put(store.AuditHeadKey, hb))
	ok, nrev, err := l.cfg.Store.Txn(ctx, conds, ops)
	if err != nil {
		return false, 0, fmt.Errorf("auditlog: append: %w", err)
	}
	return ok, nrev, nil
}

// current returns the head as this log last wrote or read it.
func (l *Log) current(ctx context.Context) (model.AuditHead, int64, error) {
	l.mu.Lock()
	if l.known {
		h, rev := l.head, l.headRev
		l.mu.Unlock()
		return h, rev, nil
	}
	l.mu.Unlock()
	h, rev, err := ReadHead(ctx, l.cfg.Store)
	if err != nil {
		return h, 0, err
	}
	l.setHead(h, rev)
	return h, rev, nil
}

func (l *Log) setHead(h model.AuditHead, rev int64) {
	l.mu.Lock()
	l.head, l.headRev, l.known = h, rev, true
	l.mu.Unlock()
}

func (l *Log) forget() {
	l.mu.Lock()
	l.known = false
	l.mu.Unlock()
}

// refresh re-signs the head when it is older than half the refresh
// interval (another server may have done it: the head is read first),
// adding a checkpoint when one is due by time.
func (l *Log) refresh(ctx context.Context) error {
	l.forget()
	head, rev, err := l.current(ctx)
	if err != nil {
		return err
	}
	if l.cfg.Clock().Sub(head.Time) < l.cfg.HeadRefresh/2 {
		return nil
	}
	ops, nh, err := l.link(head, nil)
	if err != nil {
		return err
	}
	ok, nrev, err := l.put(ctx, []store.Cond{store.IfRev(store.AuditHeadKey, rev)}, nh, ops)
	if err != nil || !ok {
		return err
	}
	l.setHead(nh, nrev)
	return nil
}

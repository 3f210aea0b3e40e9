package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/store"
)

// Sentinel errors. Callers test them with errors.Is.
var (
	// ErrNotFound is store.ErrNotFound: the object does not exist.
	ErrNotFound = store.ErrNotFound
	// ErrExists says an object with that name already exists.
	ErrExists = errors.New("state: already exists")
	// ErrQuotaExceeded says admission refused: the error also carries a
	// *model.FieldError (errors.As) naming the exhausted quota field.
	ErrQuotaExceeded = errors.New("state: quota exceeded")
	// ErrNotEmpty says a project or host still holds VMs.
	ErrNotEmpty = errors.New("state: not empty")
	// ErrContention says a compare-and-swap loop kept losing; try again.
	ErrContention = errors.New("state: too many conflicting writes, try again")
	// ErrSkip, returned by a mutate function, ends the update without
	// writing anything; the update then returns the current object and nil.
	ErrSkip = errors.New("state: skip")
	// ErrNotLeader says a transaction of a leadership term (Repo.Term)
	// was refused because the term's guard no longer holds: another
	// server leads now. Nothing was written.
	ErrNotLeader = errors.New("state: not the leader any more")
)

// maxAttempts bounds compare-and-swap retries. Under heavy contention on
// one key (50 creates in one project) every round lets one writer win, so
// this is well above the worst case of one server's concurrency.
const maxAttempts = 200

// Repo is the typed repository. It is safe for concurrent use.
type Repo struct {
	st     store.Store
	now    func() time.Time
	locks  *keyLocks
	admits *admitter // VM creates' group commits, across projects (admit.go)
	// reserve judges the failover reserve in admissions (reserve.go).
	reserve *atomic.Pointer[ReserveCheck]
	// maxOps is the store's cap on a transaction's operations (and,
	// separately, comparisons); 0: MaxTxnOps (SetMaxTxnOps).
	maxOps int
}

type keyLocks struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex
}

// New returns a Repo over st. now is the clock for timestamps (nil:
// time.Now). Its writes carry no leadership guard: it serves the API
// server and agents' endpoints, whose writes any server may make. The
// controllers write through Term.
func New(st store.Store, now func() time.Time) *Repo {
	if now == nil {
		now = time.Now
	}
	return &Repo{st: st, now: now, locks: &keyLocks{m: map[string]*sync.Mutex{}}, admits: &admitter{},
		reserve: &atomic.Pointer[ReserveCheck]{}}
}

// Term returns a Repo for one leadership term: every transaction it
// issues — through its methods, and through the store its Store method
// returns — also requires guard (the term's leader key at the revision
// the term wrote it), and fails with ErrNotLeader, writing nothing, once
// guard no longer holds. Controllers get only such a Repo, so a new write
// path cannot forget the fence. Without guard (tests and benchmarks that
// run controllers unelected) it returns r.
func (r *Repo) Term(guard ...store.Cond) *Repo {
	if len(guard) == 0 {
		return r
	}
	return &Repo{st: &fencedStore{Store: r.st, guard: append([]store.Cond(nil), guard...)}, now: r.now, locks: r.locks, admits: r.admits, reserve: r.reserve,
		maxOps: r.maxOps}
}

// SetMaxTxnOps tells the repository its store takes transactions of up
// to n operations (and n comparisons), more than etcd's default
// MaxTxnOps: a member of our own configured so
// (etcdstore.EmbeddedMaxTxnOps). Placements (Assign) use it; other
// writers keep to MaxTxnOps. Call it before the repository is used.
func (r *Repo) SetMaxTxnOps(n int) {
	if n > MaxTxnOps {
		r.maxOps = n
	}
}

// MaxOps is the store's cap on a transaction's operations (MaxTxnOps
// unless SetMaxTxnOps raised it).
func (r *Repo) MaxOps() int {
	if r.maxOps > 0 {
		return r.maxOps
	}
	return MaxTxnOps
}

// Store returns the underlying store (for a Term repository, the store
// with the term's guard on every transaction).
func (r *Repo) Store() store.Store { return r.st }

// Txn runs a transaction of the caller's own making through the
// repository (with its term's guard, if any); store errors are wrapped.
func (r *Repo) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	return r.txn(ctx, conds, ops)
}

// Now returns the repository's clock reading.
func (r *Repo) Now() time.Time { return r.now() }

// lock serialises, within this process, writers of one hot key (a
// project's usage). Other processes are still kept honest by CAS; the lock
// only saves round trips lost to conflicts.
func (r *Repo) lock(key string) func() {
	l := r.locks
	l.mu.Lock()
	m := l.m[key]
	if m == nil {
		m = &sync.Mutex{}
		l.m[key] = m
	}
	l.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// NewID returns a random 128-bit hex identifier.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func shortID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// backoff sleeps a little, growing with the attempt, jittered, so that
// competing writers spread out. It returns ctx's error if ctx ends.
func backoff(ctx context.Context, attempt int) error {
	if attempt == 0 {
		return ctx.Err()
	}
	maxd := time.Duration(min(attempt, 20)) * 200 * time.Microsecond
	d := time.Duration(mrand.Int64N(int64(maxd) + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Model types are plain data; Marshal cannot fail on them.
		panic(fmt.Sprintf("state: encode %T: %v", v, err))
	}
	return b
}

func decode(kv store.KV, v any) error {
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return fmt.Errorf("state: decode %s: %w", kv.Key, err)
	}
	return nil
}

// get reads key into v and returns its ModRev; 0 and no error when absent
// and absentOK.
func (r *Repo) get(ctx context.Context, key string, v any, absentOK bool) (int64, error) {
	kv, err := r.st.Get(ctx, key)
	if err != nil {
		if absentOK && errors.Is(err, store.ErrNotFound) {
			return 0, nil
		}
		return 0, fmt.Errorf("state: get %s: %w", key, err)
	}
	if err := decode(kv, v); err != nil {
		return 0, err
	}
	return kv.ModRev, nil
}

// txn runs a transaction and maps store errors.
func (r *Repo) txn(ctx context.Context, conds []store.Cond, ops []store.Op) (bool, int64, error) {
	ok, rev, err := r.st.Txn(ctx, conds, ops)
	if err != nil {
		return false, 0, fmt.Errorf("state: txn: %w", err)
	}
	return ok, rev, nil
}

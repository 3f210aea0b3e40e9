package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Manifest is the index of one backup: which chunk holds each fixed-size
// piece of each disk, and enough of the VM to restore it elsewhere. It is
// stored sealed; only a key holder learns the names inside.
type Manifest struct {
	ID      string `json:"id"`
	Cluster string `json:"cluster"`
	Project string `json:"project"`
	VM      string `json:"vm"`
	// Parent is the backup this one was read incrementally against
	// (empty for a full backup); the index itself is always complete.
	Parent    string    `json:"parent,omitempty"`
	Kind      string    `json:"kind"` // full | incremental
	Reason    string    `json:"reason,omitempty"`
	StartedAt time.Time `json:"startedAt"`
	// CreatedAt is the consistency point's time (when the session opened).
	CreatedAt time.Time   `json:"createdAt"`
	ChunkSize int         `json:"chunkSize"`
	Disks     []DiskIndex `json:"disks"`
	// Spec is the VM's spec (JSON) at the time of the backup.
	Spec  json.RawMessage `json:"spec,omitempty"`
	Stats Stats           `json:"stats"`
	// Consistency of the point: ConsistencyApplication or
	// ConsistencyCrash (empty in indexes written before it was
	// recorded: crash); ConsistencyNote says why.
	Consistency     string `json:"consistency,omitempty"`
	ConsistencyNote string `json:"consistencyNote,omitempty"`
}

// Consistencies of a backup's point in time.
const (
	// ConsistencyApplication: the guest agent froze the guest's file
	// systems at the point (their data was flushed to the disks).
	ConsistencyApplication = "application"
	// ConsistencyCrash: the disks as a power cut would leave them.
	ConsistencyCrash = "crash"
)

// DiskIndex lists one disk's chunks in order; an empty name is a chunk of
// zeroes (never stored).
type DiskIndex struct {
	Name   string   `json:"name"`
	Size   int64    `json:"size"`
	Chunks []string `json:"chunks"`
}

// Stats of one backup.
type Stats struct {
	// DiskBytes is the disks' total size; ReadBytes what was read from
	// them; ParentBytes what was read back from the repository (parent
	// chunks patched by an incremental backup).
	DiskBytes   int64 `json:"diskBytes"`
	ReadBytes   int64 `json:"readBytes"`
	ParentBytes int64 `json:"parentBytes,omitempty"`
	// Chunks referenced, NewChunks written, NewBytes the sealed size of
	// the new chunks (what this backup cost the repository).
	Chunks    int   `json:"chunks"`
	NewChunks int   `json:"newChunks"`
	NewBytes  int64 `json:"newBytes"`
	// ZeroChunks were all zeroes (not stored).
	ZeroChunks int           `json:"zeroChunks"`
	Duration   time.Duration `json:"duration"`
}

// ChunkSet returns every distinct non-zero chunk the manifest names.
func (m *Manifest) ChunkSet() map[string]bool {
	out := map[string]bool{}
	for _, d := range m.Disks {
		for _, c := range d.Chunks {
			if c != "" {
				out[c] = true
			}
		}
	}
	return out
}

// Disk returns the index of the disk named name, or nil.
func (m *Manifest) Disk(name string) *DiskIndex {
	for i := range m.Disks {
		if m.Disks[i].Name == name {
			return &m.Disks[i]
		}
	}
	return nil
}

var idRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidID checks a backup id (it names a blob).
func ValidID(id string) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("repo: bad backup id %q (lower-case letters, digits and '-', at most 63)", id)
	}
	return nil
}

func indexName(id string) string { return "index/" + id }

// ReadManifest reads and opens one backup's index.
func (r *Repo) ReadManifest(ctx context.Context, id string) (*Manifest, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	blob, err := r.be.Get(ctx, indexName(id))
	if err != nil {
		return nil, fmt.Errorf("repo: backup %s: %w", id, err)
	}
	plain, err := r.open(blob, []byte("index:"+id))
	if err != nil {
		return nil, fmt.Errorf("repo: index of backup %s: %w", id, err)
	}
	m := &Manifest{}
	if err := json.Unmarshal(plain, m); err != nil || m.ID != id {
		return nil, fmt.Errorf("%w: index of backup %s", ErrCorrupt, id)
	}
	return m, nil
}

// ListIDs returns the ids of the committed backups.
func (r *Repo) ListIDs(ctx context.Context) ([]string, error) {
	bs, err := r.be.List(ctx, "index")
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		id := strings.TrimPrefix(b.Name, "index/")
		if ValidID(id) == nil {
			out = append(out, id)
		}
	}
	return out, nil
}

// Catalog reads every committed backup's manifest, oldest first. An index
// that cannot be opened is returned in bad (by id) rather than failing
// the listing.
func (r *Repo) Catalog(ctx context.Context) (ms []*Manifest, bad map[string]error, err error) {
	ids, err := r.ListIDs(ctx)
	if err != nil {
		return nil, nil, err
	}
	bad = map[string]error{}
	for _, id := range ids {
		m, err := r.ReadManifest(ctx, id)
		if err != nil {
			bad[id] = err
			continue
		}
		ms = append(ms, m)
	}
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].CreatedAt.Before(ms[j].CreatedAt) })
	return ms, bad, nil
}

// DeleteBackup removes a backup's index (prune). Its chunks stay until
// garbage collection finds them unreferenced.
func (r *Repo) DeleteBackup(ctx context.Context, id string) error {
	if err := ValidID(id); err != nil {
		return err
	}
	if r.readOnly {
		return fmt.Errorf("repo: %s is read-only here", r.be)
	}
	return r.be.Delete(ctx, indexName(id))
}

// Writer writes one backup: chunks first, the index last (Commit). It
// holds a backup lock for its life, so maintenance (GC) never runs
// beside it. A Writer that is never committed leaves only chunks, which
// the next GC collects; no index, so no backup is ever listed half done.
type Writer struct {
	r    *Repo
	id   string
	lock *Lock

	mu    sync.Mutex
	known map[string]bool
}

// NewWriter starts backup id. ErrBusy while maintenance holds the
// repository.
func (r *Repo) NewWriter(ctx context.Context, id string) (*Writer, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	if r.readOnly {
		return nil, fmt.Errorf("repo: %s is read-only here: %w", r.be, ErrForeign)
	}
	if _, err := r.be.Stat(ctx, indexName(id)); err == nil {
		return nil, fmt.Errorf("%w: backup %s", ErrExists, id)
	}
	l, err := r.lockShared(ctx, "backup-"+id)
	if err != nil {
		return nil, err
	}
	return &Writer{r: r, id: id, lock: l, known: map[string]bool{}}, nil
}

// Known marks chunks as present (a parent's, read from its index) so
// that Put does not ask the backend again.
func (w *Writer) Known(ids map[string]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id := range ids {
		w.known[id] = true
	}
}

// Put stores a chunk unless the repository holds it already. It returns
// the chunk's name and the bytes newly written (0 when deduplicated). An
// all-zero chunk is never stored: its name is "".
func (w *Writer) Put(ctx context.Context, plain []byte) (id string, written int64, err error) {
	if isZero(plain) {
		return "", 0, nil
	}
	if err := w.lock.Err(); err != nil {
		return "", 0, err
	}
	id = w.r.ChunkID(plain)
	w.mu.Lock()
	have := w.known[id]
	w.mu.Unlock()
	if !have {
		have, err = w.r.HasChunk(ctx, id)
		if err != nil {
			return "", 0, err
		}
	}
	if !have {
		if written, err = w.r.putChunk(ctx, id, plain); err != nil {
			return "", 0, err
		}
	}
	w.mu.Lock()
	w.known[id] = true
	w.mu.Unlock()
	return id, written, nil
}

// Commit writes the index, which makes the backup exist, and releases
// the lock. It fails (writing nothing) when the lock was lost: a GC that
// found it stale may have removed chunks this backup counted on.
func (w *Writer) Commit(ctx context.Context, m *Manifest) error {
	m.ID, m.Cluster, m.ChunkSize = w.id, w.r.cfg.Cluster, w.r.cfg.ChunkSize
	if err := w.lock.Check(ctx); err != nil {
		return fmt.Errorf("repo: backup %s not committed: %w", w.id, err)
	}
	plain, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("repo: encode index: %w", err)
	}
	// Every chunk is durable before the index that names it exists.
	if err := w.r.be.Sync(ctx); err != nil {
		return fmt.Errorf("repo: backup %s not committed: %w", w.id, err)
	}
	if err := w.r.be.PutIfAbsent(ctx, indexName(w.id), w.r.seal(plain, []byte("index:"+w.id))); err != nil {
		return fmt.Errorf("repo: backup %s index: %w", w.id, err)
	}
	w.lock.Release(context.WithoutCancel(ctx))
	return nil
}

// Abort gives up the backup (its chunks wait for GC) and releases the lock.
func (w *Writer) Abort(ctx context.Context) {
	w.lock.Release(context.WithoutCancel(ctx))
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// IsZero reports whether b is all zeroes.
func IsZero(b []byte) bool { return isZero(b) }

var errLockLost = errors.New("repo: lock lost")

package repo

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Progress reports done of total units (bytes or chunks, as documented
// by the operation).
type Progress func(done, total int64)

// Problem is one chunk or index that failed verification, with the
// backups that use it.
type Problem struct {
	Chunk   string   `json:"chunk,omitempty"`
	Index   string   `json:"index,omitempty"`
	Error   string   `json:"error"`
	Backups []string `json:"backups,omitempty"`
}

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	Backups  int           `json:"backups"`
	Chunks   int           `json:"chunks"`
	Bytes    int64         `json:"bytes"` // plaintext bytes checked
	Problems []Problem     `json:"problems,omitempty"`
	Duration time.Duration `json:"duration"`
}

// OK reports whether nothing was wrong.
func (v VerifyReport) OK() bool { return len(v.Problems) == 0 }

// usage maps every chunk of ms to the backups naming it.
func usage(ms []*Manifest) map[string][]string {
	out := map[string][]string{}
	for _, m := range ms {
		for c := range m.ChunkSet() {
			out[c] = append(out[c], m.ID)
		}
	}
	return out
}

// Verify reads every chunk of the backups ids (all when empty), decrypts
// it and checks its name; progress counts chunks. A corrupt or missing
// chunk is reported with the backups that use it; an index that cannot
// be opened is reported too.
func (r *Repo) Verify(ctx context.Context, ids []string, progress Progress) (VerifyReport, error) {
	start := time.Now()
	var rep VerifyReport
	var ms []*Manifest
	if len(ids) == 0 {
		all, bad, err := r.Catalog(ctx)
		if err != nil {
			return rep, err
		}
		ms = all
		for id, err := range bad {
			rep.Problems = append(rep.Problems, Problem{Index: id, Error: err.Error(), Backups: []string{id}})
		}
	} else {
		for _, id := range ids {
			m, err := r.ReadManifest(ctx, id)
			if err != nil {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				rep.Problems = append(rep.Problems, Problem{Index: id, Error: err.Error(), Backups: []string{id}})
				continue
			}
			ms = append(ms, m)
		}
	}
	rep.Backups = len(ms)
	use := usage(ms)
	chunks := make([]string, 0, len(use))
	for c := range use {
		chunks = append(chunks, c)
	}
	sort.Strings(chunks)
	rep.Chunks = len(chunks)
	var (
		mu    sync.Mutex
		done  atomic.Int64
		bytes atomic.Int64
		next  atomic.Int64
		wg    sync.WaitGroup
	)
	for w := 0; w < 2; w++ {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(chunks) || ctx.Err() != nil {
					return
				}
				c := chunks[i]
				plain, err := r.ReadChunk(ctx, c)
				if err != nil && ctx.Err() == nil {
					bk := append([]string(nil), use[c]...)
					sort.Strings(bk)
					mu.Lock()
					rep.Problems = append(rep.Problems, Problem{Chunk: c, Error: err.Error(), Backups: bk})
					mu.Unlock()
				}
				bytes.Add(int64(len(plain)))
				n := done.Add(1)
				if progress != nil {
					progress(n, int64(len(chunks)))
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	sort.Slice(rep.Problems, func(i, j int) bool {
		return rep.Problems[i].Index+rep.Problems[i].Chunk < rep.Problems[j].Index+rep.Problems[j].Chunk
	})
	rep.Bytes = bytes.Load()
	rep.Duration = time.Since(start)
	return rep, nil
}

// GCReport is the outcome of GC.
type GCReport struct {
	Backups      int           `json:"backups"`
	Kept         int           `json:"kept"`
	KeptBytes    int64         `json:"keptBytes"`
	Removed      int           `json:"removed"`
	RemovedBytes int64         `json:"removedBytes"`
	Duration     time.Duration `json:"duration"`
}

// GC removes every chunk no committed backup names. It holds the
// exclusive lock, so it fails with ErrBusy while any backup is in flight
// (and no backup starts while it runs). It refuses to run when an index
// cannot be read: the chunks it names are unknown. progress counts
// chunks examined.
func (r *Repo) GC(ctx context.Context, progress Progress) (GCReport, error) {
	start := time.Now()
	var rep GCReport
	lock, err := r.LockExclusive(ctx, "gc")
	if err != nil {
		return rep, err
	}
	defer lock.Release(context.WithoutCancel(ctx))
	ms, bad, err := r.Catalog(ctx)
	if err != nil {
		return rep, err
	}
	for id, e := range bad {
		return rep, fmt.Errorf("repo: gc refused: the index of backup %s cannot be read (%v); delete or restore it first", id, e)
	}
	rep.Backups = len(ms)
	live := usage(ms)
	blobs, err := r.be.List(ctx, "chunks")
	if err != nil {
		return rep, err
	}
	for i, b := range blobs {
		if err := lock.Err(); err != nil {
			return rep, err
		}
		id := b.Name[strings.LastIndex(b.Name, "/")+1:]
		if _, ok := live[id]; ok {
			rep.Kept++
			rep.KeptBytes += b.Size
		} else {
			if err := r.be.Delete(ctx, b.Name); err != nil {
				return rep, err
			}
			rep.Removed++
			rep.RemovedBytes += b.Size
		}
		if progress != nil {
			progress(int64(i+1), int64(len(blobs)))
		}
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// SyncReport is the outcome of Sync.
type SyncReport struct {
	Backups       int           `json:"backups"`       // indexes copied
	Skipped       int           `json:"skipped"`       // already in the target
	Chunks        int           `json:"chunks"`        // chunks copied
	Bytes         int64         `json:"bytes"`         // sealed bytes copied
	PresentChunks int           `json:"presentChunks"` // already in the target
	Duration      time.Duration `json:"duration"`
}

// Sync copies the backups ids (all when empty) of src that dst lacks:
// for each, the chunks dst lacks (sealed, as they are), then its index.
// An interrupted sync leaves only extra chunks in dst — never an index
// without its chunks — and running it again resumes where it stopped.
// Both repositories need the same key (ErrKeyMismatch). progress counts
// the chunks to examine.
func Sync(ctx context.Context, src, dst *Repo, ids []string, progress Progress) (SyncReport, error) {
	start := time.Now()
	var rep SyncReport
	if src.cfg.KeyID != dst.cfg.KeyID || src.cfg.ChunkSize != dst.cfg.ChunkSize {
		return rep, fmt.Errorf("%w: %s and %s (create the target with the source's key file)", ErrKeyMismatch, src.be, dst.be)
	}
	if src.cfg.ID == dst.cfg.ID {
		return rep, errors.New("repo: sync source and target are the same repository")
	}
	if len(ids) == 0 {
		var err error
		if ids, err = src.ListIDs(ctx); err != nil {
			return rep, err
		}
	}
	have, err := dst.ListIDs(ctx)
	if err != nil {
		return rep, err
	}
	haveSet := map[string]bool{}
	for _, id := range have {
		haveSet[id] = true
	}
	var todo []*Manifest
	for _, id := range ids {
		if haveSet[id] {
			rep.Skipped++
			continue
		}
		m, err := src.ReadManifest(ctx, id)
		if err != nil {
			return rep, err
		}
		todo = append(todo, m)
	}
	var total int64
	for _, m := range todo {
		total += int64(len(m.ChunkSet()))
	}
	w, err := dst.NewSyncWriter(ctx, "sync-"+src.cfg.ID)
	if err != nil {
		return rep, err
	}
	defer w.Release(context.WithoutCancel(ctx))
	var done int64
	copied := map[string]bool{}
	for _, m := range todo {
		for c := range m.ChunkSet() {
			done++
			if progress != nil {
				progress(done, total)
			}
			if copied[c] {
				continue
			}
			if err := w.Err(); err != nil {
				return rep, err
			}
			ok, err := dst.HasChunk(ctx, c)
			if err != nil {
				return rep, err
			}
			if ok {
				rep.PresentChunks++
				copied[c] = true
				continue
			}
			blob, err := src.be.Get(ctx, chunkName(c))
			if err != nil {
				return rep, fmt.Errorf("repo: sync chunk %s of backup %s: %w", c, m.ID, err)
			}
			if err := dst.be.PutLazy(ctx, chunkName(c), blob); err != nil {
				return rep, err
			}
			copied[c] = true
			rep.Chunks++
			rep.Bytes += int64(len(blob))
		}
		blob, err := src.be.Get(ctx, indexName(m.ID))
		if err != nil {
			return rep, err
		}
		if err := w.Check(ctx); err != nil {
			return rep, err
		}
		if err := dst.be.Sync(ctx); err != nil {
			return rep, err
		}
		if err := dst.be.PutIfAbsent(ctx, indexName(m.ID), blob); err != nil && !errors.Is(err, ErrExists) {
			return rep, err
		}
		rep.Backups++
	}
	rep.Duration = time.Since(start)
	return rep, nil
}

// NewSyncWriter takes a shared lock on r for a copy into it (so GC does
// not remove chunks copied before their index).
func (r *Repo) NewSyncWriter(ctx context.Context, name string) (*Lock, error) {
	if r.readOnly {
		return nil, fmt.Errorf("repo: %s is read-only here: %w", r.be, ErrForeign)
	}
	return r.lockShared(ctx, name)
}

// Package backup moves VM disks between a hypervisor.Backupper session
// and a backup repository (internal/backup/repo): Backup reads a
// consistent point of a VM's disks — everything allocated the first
// time, then only the extents the driver's change tracking marks,
// patched into the parent backup's chunks — and writes a complete index;
// Restore writes an index's chunks back into a stopped VM's disks.
//
// It is the host side of backups (the agent runs it). It imports the
// hypervisor types, the repository and the standard library; no store,
// server or concrete driver.
package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/hypervisor"
)

// Progress is reported while a backup or restore runs: Done of Total
// bytes (to read from the disks, or to write into them).
type Progress struct {
	Done  int64
	Total int64
}

// Job describes one backup.
type Job struct {
	// ID names the backup and the driver checkpoint.
	ID      string
	Project string
	VM      string
	// Parent is the last backup of this VM in the repository (nil: full).
	Parent *repo.Manifest
	// Spec is the VM's spec, stored with the index for restores.
	Spec json.RawMessage
	// Progress is called now and then (may be nil).
	Progress func(Progress)
	// Clock stamps the manifest (nil: time.Now).
	Clock func() time.Time
}

// workers is how many chunks are sealed (compressed, encrypted, hashed)
// at once: the machine's two cores.
const workers = 2

// Backup stores one backup of the VM vmID in r and returns its index.
// Nothing is listed unless every chunk is stored: the index is written
// last. On failure the driver's change tracking is folded back, so the
// next backup still covers every change since the parent.
func Backup(ctx context.Context, b hypervisor.Backupper, vmID string, r *repo.Repo, job Job) (*repo.Manifest, error) {
	now := job.Clock
	if now == nil {
		now = time.Now
	}
	started := now()
	w, err := r.NewWriter(ctx, job.ID)
	if err != nil {
		return nil, err
	}
	since := ""
	if job.Parent != nil && job.Parent.ChunkSize == r.ChunkSize() {
		since = job.Parent.ID
		w.Known(job.Parent.ChunkSet())
	}
	sess, err := b.OpenBackup(ctx, vmID, hypervisor.BackupRequest{Checkpoint: job.ID, Since: since})
	if err != nil {
		w.Abort(ctx)
		return nil, err
	}
	m := &repo.Manifest{Project: job.Project, VM: job.VM, Kind: "full", StartedAt: started.UTC(), CreatedAt: now().UTC(), Spec: job.Spec}
	err = run(ctx, sess, r, w, job, m)
	if err == nil {
		m.Stats.Duration = now().Sub(started)
		err = w.Commit(ctx, m)
	}
	if err != nil {
		w.Abort(ctx)
		if cerr := sess.Close(context.WithoutCancel(ctx), false); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return nil, err
	}
	// Stored. A failure to settle the checkpoints costs the next backup
	// extra reads, never correctness: it is not an error of this one.
	_ = sess.Close(context.WithoutCancel(ctx), true)
	return m, nil
}

// plan is one disk's work: which chunks to write and which byte ranges
// of each to read.
type plan struct {
	disk   hypervisor.BackupDisk
	chunks []string // the result, starting from the parent's
	todo   []chunkWork
	read   int64
}

type chunkWork struct {
	index  int
	base   string // parent chunk to patch ("" = zeroes)
	ranges []hypervisor.Extent
}

func run(ctx context.Context, sess hypervisor.BackupSession, r *repo.Repo, w *repo.Writer, job Job, m *repo.Manifest) error {
	cs := int64(r.ChunkSize())
	var plans []*plan
	var total int64
	var reasons []string
	incremental := false
	for _, d := range sess.Disks() {
		exts, err := sess.Extents(ctx, d.Name)
		if err != nil {
			return fmt.Errorf("backup: disk %s: %w", d.Name, err)
		}
		p := &plan{disk: d, chunks: make([]string, (d.Size+cs-1)/cs)}
		if d.Incremental {
			pd := job.Parent.Disk(d.Name)
			if pd == nil {
				return fmt.Errorf("backup: disk %s: incremental without a parent index", d.Name)
			}
			if pd.Size > d.Size {
				return fmt.Errorf("backup: disk %s shrank from %d to %d bytes", d.Name, pd.Size, d.Size)
			}
			copy(p.chunks, pd.Chunks)
			incremental = true
		} else if d.Reason != "" {
			reasons = append(reasons, "disk "+d.Name+": "+d.Reason)
		}
		p.todo = splitByChunk(exts, cs, d.Size)
		for i := range p.todo {
			if d.Incremental {
				p.todo[i].base = p.chunks[p.todo[i].index]
			}
			for _, e := range p.todo[i].ranges {
				p.read += e.Length
			}
		}
		total += p.read
		plans = append(plans, p)
	}
	if incremental && job.Parent != nil {
		m.Kind, m.Parent = "incremental", job.Parent.ID
	}
	m.Reason = strings.Join(reasons, "; ")
	var done atomic.Int64
	report := func() {
		if job.Progress != nil {
			job.Progress(Progress{Done: done.Load(), Total: total})
		}
	}
	report()
	for _, p := range plans {
		if err := writeDisk(ctx, sess, r, w, p, cs, &done, report, &m.Stats); err != nil {
			return err
		}
		m.Disks = append(m.Disks, repo.DiskIndex{Name: p.disk.Name, Size: p.disk.Size, Chunks: p.chunks})
		m.Stats.DiskBytes += p.disk.Size
		for _, c := range p.chunks {
			if c == "" {
				m.Stats.ZeroChunks++
			} else {
				m.Stats.Chunks++
			}
		}
	}
	m.Stats.ReadBytes = total
	report()
	return nil
}

// splitByChunk cuts extents at chunk boundaries and groups them by chunk.
func splitByChunk(exts []hypervisor.Extent, cs, size int64) []chunkWork {
	var out []chunkWork
	for _, e := range exts {
		if e.Zero {
			continue
		}
		off, end := e.Offset, min(e.Offset+e.Length, size)
		for off < end {
			i := off / cs
			n := min(end, (i+1)*cs) - off
			if k := len(out); k == 0 || out[k-1].index != int(i) {
				out = append(out, chunkWork{index: int(i)})
			}
			k := len(out) - 1
			out[k].ranges = append(out[k].ranges, hypervisor.Extent{Offset: off, Length: n})
			off += n
		}
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].index < out[b].index })
	return out
}

type sealed struct {
	index int
	buf   []byte
}

// writeDisk reads each chunk's ranges in order (one reader: the session
// is sequential) and hands the chunk to workers that store it.
func writeDisk(ctx context.Context, sess hypervisor.BackupSession, r *repo.Repo, w *repo.Writer, p *plan, cs int64,
	done *atomic.Int64, report func(), st *repo.Stats) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pool := sync.Pool{New: func() any { return make([]byte, cs) }}
	work := make(chan sealed, workers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range workers {
		wg.Go(func() {
			for c := range work {
				id, written, err := w.Put(ctx, c.buf)
				pool.Put(c.buf[:cap(c.buf)])
				if err != nil {
					cancel(fmt.Errorf("backup: disk %s chunk %d: %w", p.disk.Name, c.index, err))
					continue
				}
				mu.Lock()
				p.chunks[c.index] = id
				if written > 0 {
					st.NewChunks++
					st.NewBytes += written
				}
				mu.Unlock()
			}
		})
	}
	err := func() error {
		defer close(work)
		last := time.Now()
		for _, cw := range p.todo {
			n := min(cs, p.disk.Size-int64(cw.index)*cs)
			buf := pool.Get().([]byte)[:n]
			if cw.base != "" {
				plain, err := r.ReadChunk(ctx, cw.base)
				if err != nil {
					return fmt.Errorf("backup: parent chunk of disk %s: %w", p.disk.Name, err)
				}
				copy(buf, plain)
				clear(buf[min(int64(len(plain)), n):])
				mu.Lock()
				st.ParentBytes += int64(len(plain))
				mu.Unlock()
			} else {
				clear(buf)
			}
			for _, e := range cw.ranges {
				at := e.Offset - int64(cw.index)*cs
				if err := sess.ReadAt(ctx, p.disk.Name, buf[at:at+e.Length], e.Offset); err != nil {
					return fmt.Errorf("backup: read disk %s at %d: %w", p.disk.Name, e.Offset, err)
				}
				done.Add(e.Length)
			}
			select {
			case work <- sealed{index: cw.index, buf: buf}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			if time.Since(last) > 500*time.Millisecond {
				report()
				last = time.Now()
			}
		}
		return nil
	}()
	wg.Wait()
	if err != nil {
		return err
	}
	return context.Cause(ctx)
}

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
	// BusyWait is how long the backup waits for a repository held by
	// maintenance (a GC) before it fails with repo.ErrBusy; 0 fails at
	// once. Waiting is before anything is read or the VM is touched.
	BusyWait time.Duration
	// Waiting is called each time the backup finds the repository busy
	// and will try again (may be nil).
	Waiting func(error)
	// Freeze asks the driver for an application-consistent point (the
	// guest agent freezes the file systems around it, when the guest
	// has one); the manifest records which point it got.
	Freeze bool
	// RateLimit caps the disk reads in bytes per second (0: none): the
	// reads, and so the compression and sealing behind them, are paced,
	// which bounds the CPU a backup takes from the host and its guest.
	RateLimit int64
	// Workers is how many chunks are sealed at once (0: DefaultWorkers).
	Workers int
}

// busyRetry is how often a backup that waits for maintenance tries the
// repository again.
const busyRetry = 500 * time.Millisecond

// DefaultWorkers is how many chunks are sealed (compressed, encrypted,
// hashed) at once unless a job says otherwise: the machine's two cores.
const DefaultWorkers = 2

// rateSlice is the largest read of a rate-limited backup: pacing 1 MiB
// at a time keeps its bursts short.
const rateSlice = 1 << 20

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
	w, err := newWriter(ctx, r, job)
	if err != nil {
		return nil, err
	}
	since := ""
	if job.Parent != nil && job.Parent.ChunkSize == r.ChunkSize() {
		since = job.Parent.ID
		w.Known(job.Parent.ChunkSet())
	}
	sess, err := b.OpenBackup(ctx, vmID, hypervisor.BackupRequest{Checkpoint: job.ID, Since: since, Freeze: job.Freeze})
	if err != nil {
		w.Abort(ctx)
		return nil, err
	}
	m := &repo.Manifest{Project: job.Project, VM: job.VM, Kind: "full", StartedAt: started.UTC(), CreatedAt: now().UTC(), Spec: job.Spec}
	m.Consistency, m.ConsistencyNote = consistency(sess, job.Freeze)
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

// consistency says what the session's point holds (repo.Consistency*).
func consistency(sess hypervisor.BackupSession, freeze bool) (string, string) {
	cr, ok := sess.(hypervisor.BackupConsistencyReporter)
	switch {
	case !freeze:
		return repo.ConsistencyCrash, "no guest freeze was asked"
	case !ok:
		return repo.ConsistencyCrash, "the driver cannot freeze guests"
	}
	c := cr.Consistency()
	if c.Application {
		return repo.ConsistencyApplication, fmt.Sprintf("the guest agent froze %d file system(s)", c.FrozenFilesystems)
	}
	return repo.ConsistencyCrash, c.Reason
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
	pace := newPacer(job.RateLimit)
	for _, p := range plans {
		if err := writeDisk(ctx, sess, r, w, p, cs, &done, report, &m.Stats, pace, job.Workers); err != nil {
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
	done *atomic.Int64, report func(), st *repo.Stats, pace *pacer, workers int) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if workers <= 0 {
		workers = DefaultWorkers
	}
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
				for off := int64(0); off < e.Length; {
					n := e.Length - off
					if pace.limited() {
						n = min(n, rateSlice)
					}
					if err := sess.ReadAt(ctx, p.disk.Name, buf[at+off:at+off+n], e.Offset+off); err != nil {
						return fmt.Errorf("backup: read disk %s at %d: %w", p.disk.Name, e.Offset+off, err)
					}
					off += n
					done.Add(n)
					if err := pace.wait(ctx, n); err != nil {
						return err
					}
				}
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

// newWriter opens the backup's writer, waiting up to job.BusyWait while
// maintenance holds the repository: a backup asked for during a GC runs
// after it rather than failing.
func newWriter(ctx context.Context, r *repo.Repo, job Job) (*repo.Writer, error) {
	deadline := time.Now().Add(job.BusyWait)
	for {
		w, err := r.NewWriter(ctx, job.ID)
		if err == nil || !errors.Is(err, repo.ErrBusy) || !time.Now().Before(deadline) {
			return w, err
		}
		if job.Waiting != nil {
			job.Waiting(err)
		}
		t := time.NewTimer(min(busyRetry, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// pacer keeps reads at or under rate bytes per second on average since
// the first read (a nil or zero-rate pacer never waits).
type pacer struct {
	rate  int64
	start time.Time
	bytes int64
	now   func() time.Time
	sleep func(context.Context, time.Duration) error
}

func newPacer(rate int64) *pacer {
	return &pacer{rate: rate, now: time.Now, sleep: sleepCtx}
}

func (p *pacer) limited() bool { return p != nil && p.rate > 0 }

// wait accounts n bytes just read and sleeps until the average rate is
// back under the limit.
func (p *pacer) wait(ctx context.Context, n int64) error {
	if !p.limited() {
		return nil
	}
	if p.start.IsZero() {
		p.start = p.now()
	}
	p.bytes += n
	due := p.start.Add(time.Duration(float64(p.bytes) / float64(p.rate) * float64(time.Second)))
	if d := due.Sub(p.now()); d > 0 {
		return p.sleep(ctx, d)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

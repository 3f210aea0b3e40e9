package backup

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/hypervisor"
)

// RestoreStats says what a restore did.
type RestoreStats struct {
	Bytes    int64         `json:"bytes"`    // disk bytes restored (data and zeroes)
	Written  int64         `json:"written"`  // bytes of data written
	Chunks   int           `json:"chunks"`   // chunks read from the repository
	Duration time.Duration `json:"duration"` // wall time
}

// Restore writes backup m from r into the disks of the stopped VM vmID
// (each disk of m into the VM's disk of that name, which must be at least
// as large). Every byte of each disk is written: data chunks as data,
// zero chunks and any tail beyond the backup as zeroes.
func Restore(ctx context.Context, b hypervisor.Backupper, vmID string, r *repo.Repo, m *repo.Manifest,
	progress func(Progress)) (RestoreStats, error) {
	start := time.Now()
	var st RestoreStats
	sess, err := b.OpenRestore(ctx, vmID)
	if err != nil {
		return st, err
	}
	sizes := map[string]int64{}
	for _, d := range sess.Disks() {
		sizes[d.Name] = d.Size
	}
	var total int64
	for _, d := range m.Disks {
		size, ok := sizes[d.Name]
		switch {
		case !ok:
			err = fmt.Errorf("backup: the VM has no disk %q to restore into", d.Name)
		case size < d.Size:
			err = fmt.Errorf("backup: disk %q is %d bytes, the backup's is %d", d.Name, size, d.Size)
		}
		if err != nil {
			return st, errors.Join(err, sess.Close(context.WithoutCancel(ctx)))
		}
		total += size
	}
	var done atomic.Int64
	for _, d := range m.Disks {
		if err = restoreDisk(ctx, sess, r, m.ChunkSize, d, sizes[d.Name], &done, total, progress, &st); err != nil {
			break
		}
	}
	if cerr := sess.Close(context.WithoutCancel(ctx)); err == nil {
		err = cerr
	}
	st.Bytes = done.Load()
	st.Duration = time.Since(start)
	return st, err
}

func restoreDisk(ctx context.Context, sess hypervisor.RestoreSession, r *repo.Repo, cs int, d repo.DiskIndex, size int64,
	done *atomic.Int64, total int64, progress func(Progress), st *RestoreStats) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type job struct {
		off int64
		id  string
	}
	jobs := make(chan job, DefaultWorkers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	last := time.Now()
	for range DefaultWorkers {
		wg.Go(func() {
			for j := range jobs {
				plain, err := r.ReadChunk(ctx, j.id)
				if err == nil {
					err = sess.WriteAt(ctx, d.Name, plain, j.off)
				}
				if err != nil {
					cancel(fmt.Errorf("backup: restore disk %s at %d: %w", d.Name, j.off, err))
					continue
				}
				done.Add(int64(len(plain)))
				mu.Lock()
				st.Chunks++
				st.Written += int64(len(plain))
				if progress != nil && time.Since(last) > 500*time.Millisecond {
					progress(Progress{Done: done.Load(), Total: total})
					last = time.Now()
				}
				mu.Unlock()
			}
		})
	}
	zeroFrom := int64(-1)
	flushZero := func(to int64) error {
		if zeroFrom < 0 {
			return nil
		}
		err := sess.WriteZeroes(ctx, d.Name, zeroFrom, to-zeroFrom)
		done.Add(to - zeroFrom)
		zeroFrom = -1
		return err
	}
	err := func() error {
		defer close(jobs)
		for i, id := range d.Chunks {
			off := int64(i) * int64(cs)
			if id == "" {
				if zeroFrom < 0 {
					zeroFrom = off
				}
				continue
			}
			if err := flushZero(off); err != nil {
				return err
			}
			select {
			case jobs <- job{off: off, id: id}:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		end := int64(len(d.Chunks)) * int64(cs)
		if end < size && zeroFrom < 0 {
			zeroFrom = end
		}
		return flushZero(size)
	}()
	wg.Wait()
	if err != nil {
		return err
	}
	if progress != nil {
		progress(Progress{Done: done.Load(), Total: total})
	}
	return context.Cause(ctx)
}

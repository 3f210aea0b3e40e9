package qemu

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/backup"
	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
)

// BenchmarkBackupGuestGap measures what a full backup costs the running
// guest, as the migration benchmarks do: the test guest prints a TICK
// line every second (vpool.tick=1), its serial log is tailed and
// GuestGap is the longest stall between ticks beyond the guest's own
// period. Each run measures a window without a backup first (the stall
// the loaded TCG host causes anyway) and then the window of a full
// backup of 512 MiB of /usr data on a 1 GiB disk (fleecing + NBD reads
// + zstd + sealing in this process).
//
//	go test -run XXX -bench BackupGuestGap -benchtime 1x -timeout 30m ./internal/hypervisor/qemu/
//
// VPOOL_BENCH_RUNS runs per condition (default 3), "idle" and "load"
// (two busy loops).
func BenchmarkBackupGuestGap(b *testing.B) {
	g := heavy(b)
	data := benchData(b, 512<<20)
	runs := 3
	if v := os.Getenv("VPOOL_BENCH_RUNS"); v != "" {
		fmt.Sscan(v, &runs)
	}
	for _, cond := range []string{"idle", "load"} {
		b.Run(cond, func(b *testing.B) {
			if cond == "load" {
				stop := busyLoops(b, 2)
				defer stop()
			}
			d := newDriver(b, testConfig(b, shortTempDir(b)))
			var base, gap, secs []float64
			for i := 0; i < runs; i++ {
				load := loadavg()
				bg, gg, s := runGapBench(b, d, g, data, fmt.Sprintf("%s%d", cond, i))
				b.Logf("run %d (load %s): stall without a backup %.0f ms, during the backup %.0f ms, backup %.1f s",
					i, load, ms(bg), ms(gg), s.Seconds())
				base, gap, secs = append(base, ms(bg)), append(gap, ms(gg)), append(secs, s.Seconds())
			}
			for _, m := range []struct {
				unit string
				xs   []float64
			}{{"baseline-gap-ms", base}, {"backup-gap-ms", gap}, {"backup-s", secs}} {
				sort.Float64s(m.xs)
				b.ReportMetric(median(m.xs), m.unit)
				b.Logf("%-16s min %8.1f  median %8.1f  max %8.1f", m.unit, m.xs[0], median(m.xs), m.xs[len(m.xs)-1])
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// runGapBench boots a ticking guest on a disk filled with data, then
// returns the stall of a quiet window, the stall during a full backup and
// the backup's wall time.
func runGapBench(b *testing.B, d *Driver, g guest.Guest, data, tag string) (baseline, gap, took time.Duration) {
	ctx := context.Background()
	cfg := vmConfig(g, "gap-"+tag, "vpool.tick=1")
	mustDo(b, "Create", d.Create(ctx, cfg))
	defer d.Delete(ctx, cfg.ID)
	fillFromFile(b, d, cfg.ID, data)
	mustDo(b, "Start", d.Start(ctx, cfg.ID))
	waitReady(b, d, cfg.ID)
	rp, err := repo.Create(ctx, &repo.Dir{Root: filepath.Join(b.TempDir(), "repo")}, repo.Options{Key: repo.GenerateKey(), Cluster: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	quiet := watchTicks(d.SerialLog(cfg.ID), true, time.Now)
	const window = 8
	if got := quiet.waitTicks(window, 3*window*time.Second); len(got) < 3 {
		b.Fatalf("the guest printed %d ticks in a quiet window", len(got))
	}
	baseline = GuestGap(quiet.Stop())

	w := watchTicks(d.SerialLog(cfg.ID), true, time.Now)
	w.waitTicks(2, 30*time.Second)
	t0 := time.Now()
	m, err := backup.Backup(ctx, d, cfg.ID, rp, backup.Job{ID: "gap-" + tag})
	if err != nil {
		b.Fatal(err)
	}
	took = time.Since(t0)
	after := len(w.Ticks())
	w.waitTicks(after+2, 30*time.Second) // the guest ticks on after it
	ticks := w.Stop()
	if len(ticks) < after+2 {
		b.Fatalf("the guest stopped ticking after the backup (%d ticks, %d before its end)", len(ticks), after)
	}
	if m.Stats.ReadBytes < 512<<20 {
		b.Fatalf("the backup read %d bytes of 512 MiB written", m.Stats.ReadBytes)
	}
	return baseline, GuestGap(ticks), took
}

// fillFromFile writes the file at data to the start of a stopped VM's root
// disk through a restore session.
func fillFromFile(b *testing.B, d *Driver, id, data string) {
	ctx := context.Background()
	s, err := d.OpenRestore(ctx, id)
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(data)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	for off := int64(0); ; {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			mustDo(b, "fill", s.WriteAt(ctx, "root", buf[:n], off))
			off += int64(n)
		}
		if err != nil {
			break
		}
	}
	mustDo(b, "fill close", s.Close(ctx))
}

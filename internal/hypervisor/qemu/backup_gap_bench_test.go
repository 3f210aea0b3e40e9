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
// period. Each run boots a guest on a 1 GiB disk holding 512 MiB of
// /usr data, measures a window without a backup first (the stall the
// loaded TCG host causes anyway), then one full backup without a limit
// and one with the limit (backup.Job RateLimit and Workers: fleecing +
// NBD reads + zstd + sealing in this process), in alternating order.
//
//	go test -run XXX -bench BackupGuestGap -benchtime 1x -timeout 30m ./internal/hypervisor/qemu/
//
// VPOOL_BENCH_RUNS runs per condition (default 3), "idle" and "load"
// (two busy loops); VPOOL_BENCH_RATE the limit in MiB/s (default 16,
// with one sealing worker).
func BenchmarkBackupGuestGap(b *testing.B) {
	g := heavy(b)
	data := benchData(b, 512<<20)
	runs, rate := 3, 16
	if v := os.Getenv("VPOOL_BENCH_RUNS"); v != "" {
		fmt.Sscan(v, &runs)
	}
	if v := os.Getenv("VPOOL_BENCH_RATE"); v != "" {
		fmt.Sscan(v, &rate)
	}
	limits := []gapLimit{{name: "unlimited"}, {name: fmt.Sprintf("rate%d-w1", rate), rate: int64(rate) << 20, workers: 1}}
	for _, cond := range []string{"idle", "load"} {
		b.Run(cond, func(b *testing.B) {
			if cond == "load" {
				stop := busyLoops(b, 2)
				defer stop()
			}
			d := newDriver(b, testConfig(b, shortTempDir(b)))
			series := map[string][]float64{}
			for i := 0; i < runs; i++ {
				load := loadavg()
				order := limits
				if i%2 == 1 {
					order = []gapLimit{limits[1], limits[0]}
				}
				bg, res := runGapBench(b, d, g, data, fmt.Sprintf("%s%d", cond, i), order)
				series["baseline-gap-ms"] = append(series["baseline-gap-ms"], ms(bg))
				line := fmt.Sprintf("run %d (load %s): stall without a backup %.0f ms", i, load, ms(bg))
				for _, r := range res {
					series[r.name+"-gap-ms"] = append(series[r.name+"-gap-ms"], ms(r.gap))
					series[r.name+"-s"] = append(series[r.name+"-s"], r.took.Seconds())
					line += fmt.Sprintf("; %s: stall %.0f ms, backup %.1f s", r.name, ms(r.gap), r.took.Seconds())
				}
				b.Log(line)
			}
			units := make([]string, 0, len(series))
			for u := range series {
				units = append(units, u)
			}
			sort.Strings(units)
			for _, u := range units {
				xs := series[u]
				sort.Float64s(xs)
				b.ReportMetric(median(xs), u)
				b.Logf("%-22s min %8.1f  median %8.1f  max %8.1f", u, xs[0], median(xs), xs[len(xs)-1])
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// gapLimit is one backup configuration of the guest-gap benchmark and,
// once run, its stall and wall time.
type gapLimit struct {
	name      string
	rate      int64
	workers   int
	gap, took time.Duration
}

// runGapBench boots a ticking guest on a disk filled with data, then
// returns the stall of a quiet window and, for each limit in order, the
// stall during a full backup and the backup's wall time.
func runGapBench(b *testing.B, d *Driver, g guest.Guest, data, tag string, limits []gapLimit) (time.Duration, []gapLimit) {
	ctx := context.Background()
	cfg := vmConfig(g, "gap-"+tag, "vpool.tick=1")
	mustDo(b, "Create", d.Create(ctx, cfg))
	defer d.Delete(ctx, cfg.ID)
	fillFromFile(b, d, cfg.ID, data)
	mustDo(b, "Start", d.Start(ctx, cfg.ID))
	waitReady(b, d, cfg.ID)
	quiet := watchTicks(d.SerialLog(cfg.ID), true, time.Now)
	const window = 8
	if got := quiet.waitTicks(window, 3*window*time.Second); len(got) < 3 {
		b.Fatalf("the guest printed %d ticks in a quiet window", len(got))
	}
	baseline := GuestGap(quiet.Stop())
	var out []gapLimit
	for i, l := range limits {
		// A full backup each time (no parent), each into a new
		// repository: every chunk is compressed, sealed and written.
		rp, err := repo.Create(ctx, &repo.Dir{Root: filepath.Join(b.TempDir(), "repo")}, repo.Options{Key: repo.GenerateKey(), Cluster: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		w := watchTicks(d.SerialLog(cfg.ID), true, time.Now)
		w.waitTicks(2, 30*time.Second)
		t0 := time.Now()
		m, err := backup.Backup(ctx, d, cfg.ID, rp, backup.Job{ID: fmt.Sprintf("gap-%s-%d", tag, i), RateLimit: l.rate, Workers: l.workers})
		if err != nil {
			b.Fatal(err)
		}
		l.took = time.Since(t0)
		after := len(w.Ticks())
		w.waitTicks(after+2, 30*time.Second) // the guest ticks on after it
		ticks := w.Stop()
		if len(ticks) < after+2 {
			b.Fatalf("the guest stopped ticking after the backup (%d ticks, %d before its end)", len(ticks), after)
		}
		if m.Stats.ReadBytes < 512<<20 {
			b.Fatalf("the backup read %d bytes of 512 MiB written", m.Stats.ReadBytes)
		}
		l.gap = GuestGap(ticks)
		out = append(out, l)
	}
	return baseline, out
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

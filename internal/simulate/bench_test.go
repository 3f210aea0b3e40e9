package simulate

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/testenv"
	"github.com/vpool/vpool/internal/trace"
)

// BenchmarkSimDay replays one PlanetLab day (1,052 VMs, 800 hosts, 288
// steps) and reports seconds per simulated day and the heap in use.
func BenchmarkSimDay(b *testing.B) {
	tr := loadDay(b, "20110303")
	for _, policy := range []string{"vpool", "lr-mmt-1.2", "thr-mmt-0.8", "dvfs"} {
		b.Run(policy, func(b *testing.B) {
			runtime.GC()
			var peak uint64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				cfg := Config{Policy: policy, Progress: func(step, _ int) {
					if step%32 == 0 {
						peak = max(peak, heapInUse())
					}
				}}
				if _, err := Run(context.Background(), tr, cfg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/day")
			b.ReportMetric(float64(peak)/(1<<20), "MB-heap")
			if rss := peakRSS(); rss > 0 {
				b.ReportMetric(rss, "MB-peak-rss")
			}
		})
	}
}

func heapInUse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func loadDay(tb testing.TB, day string) *trace.Trace {
	tb.Helper()
	dir := planetLabDir(tb) + "/" + day
	tr, err := trace.ReadPlanetLabDir(dir, trace.Native)
	if err != nil {
		testenv.SkipOrFail(tb, "planetlab trace %s not available (set VPOOL_PLANETLAB): %v", dir, err)
	}
	return tr
}

// peakRSS is the process's resident-set high-water mark in MB (Linux
// VmHWM; 0 elsewhere). It covers the whole test binary.
func peakRSS() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

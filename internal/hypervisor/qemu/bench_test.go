package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// BenchmarkCreateToReady measures Create + Start until the guest prints
// its ready marker on the serial console (median of 5 per iteration).
func BenchmarkCreateToReady(b *testing.B) {
	g := heavy(b)
	d := newDriver(b, testConfig(b, ""))
	ctx := context.Background()
	var samples []float64
	for i := 0; i < b.N; i++ {
		for j := 0; j < 5; j++ {
			cfg := vmConfig(g, fmt.Sprintf("bench%d-%d", i, j))
			t0 := time.Now()
			mustDo(b, "Create", d.Create(ctx, cfg))
			mustDo(b, "Start", d.Start(ctx, cfg.ID))
			waitReady(b, d, cfg.ID)
			samples = append(samples, time.Since(t0).Seconds())
			mustDo(b, "Delete", d.Delete(ctx, cfg.ID))
		}
	}
	b.ReportMetric(median(samples), "s/create-to-ready")
	b.ReportMetric(0, "ns/op")
	b.Logf("accel %s; create-to-ready samples (s): %.2f", d.Accel(), samples)
}

// BenchmarkLinkedClone measures creating a VM whose root disk is a linked
// clone of a 2 GiB image, and what the clone takes on disk.
func BenchmarkLinkedClone(b *testing.B) {
	heavy(b)
	d := newDriver(b, testConfig(b, ""))
	base := makeBaseImage(b, d, shortTempDir(b))
	ctx := context.Background()
	var times, sizes []float64
	for i := 0; i < b.N; i++ {
		for j := 0; j < 5; j++ {
			cfg := hypervisor.VMConfig{ID: fmt.Sprintf("test.clone%d-%d", i, j), Name: "clone", Project: "test",
				Spec:  model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB, Disks: []model.Disk{{Name: "root", Size: model.GiB}}},
				Image: &hypervisor.Image{Name: "base", Disk: base, Format: "qcow2"}}
			t0 := time.Now()
			mustDo(b, "Create", d.Create(ctx, cfg))
			times = append(times, float64(time.Since(t0).Milliseconds()))
			v, _ := d.get(cfg.ID)
			sizes = append(sizes, float64(diskUsage(v.rec.Disks))/1024)
			mustDo(b, "Delete", d.Delete(ctx, cfg.ID))
		}
	}
	b.ReportMetric(median(times), "ms/clone")
	b.ReportMetric(median(sizes), "KiB/clone")
	b.ReportMetric(0, "ns/op")
}

// rssAnon is the process's anonymous resident memory: its own cost, not
// counting the kernel image mmapped by every test guest (page cache,
// shared between them).
func rssAnon(b *testing.B, pid int) int64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	mustDo(b, "status", err)
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			mustDo(b, "RssAnon", err)
			return kb << 10
		}
	}
	b.Fatal("no RssAnon")
	return 0
}

// BenchmarkCapacity64MiB reports how many 64 MiB guests the capacity rule
// admits on this host, and the measured RSS of small guests (three running
// at once) against the per-VM overhead the rule assumes. The test guest
// itself needs 96 MiB (the Debian kernel does not fit in 64 MiB), so the
// RSS is measured on 96 MiB guests.
func BenchmarkCapacity64MiB(b *testing.B) {
	g := heavy(b)
	d := newDriver(b, testConfig(b, ""))
	ctx := context.Background()
	var rss []float64
	for i := 0; i < b.N; i++ {
		var ids []string
		for j := 0; j < 3; j++ {
			cfg := vmConfig(g, fmt.Sprintf("cap%d-%d", i, j))
			cfg.Spec.Memory = 96 * model.MiB
			mustDo(b, "Create", d.Create(ctx, cfg))
			mustDo(b, "Start", d.Start(ctx, cfg.ID))
			ids = append(ids, cfg.ID)
		}
		for _, id := range ids {
			waitReady(b, d, id)
		}
		time.Sleep(2 * time.Second)
		for _, id := range ids {
			v, _ := d.get(id)
			v.mu.Lock()
			r := rssAnon(b, v.proc.pid)
			v.mu.Unlock()
			rss = append(rss, float64(r)/float64(model.MiB))
			mustDo(b, "Delete", d.Delete(ctx, id))
		}
	}
	n, err := d.Capacity(64 * model.MiB)
	mustDo(b, "Capacity", err)
	total, _ := hostMemory()
	b.ReportMetric(float64(n), "guests/host-by-rule")
	b.ReportMetric(median(rss), "MiB-anon-RSS/96MiB-guest")
	b.ReportMetric(float64(int64(total-d.cfg.HostReserve)/int64(median(rss)*float64(model.MiB))), "guests/host-by-RSS")
	b.ReportMetric(0, "ns/op")
	// The rule refuses the guest after the last one that fits.
	if err := d.admit(&vm{rec: &record{Config: hypervisor.VMConfig{ID: "probe"}}}, model.Bytes(total)); !errors.Is(err, hypervisor.ErrNoCapacity) {
		b.Fatalf("capacity rule admitted a guest as large as the host: %v", err)
	}
}

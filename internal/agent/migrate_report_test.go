package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

func TestAddrForLogHidesKey(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"qemu://10.0.0.5?ctl=4003&key=SECRET&nbd=4002", "qemu://10.0.0.5?ctl=4003&key=%5Bredacted%5D&nbd=4002"},
		{"qemu://10.0.0.5?ctl=1&nbd=2", "qemu://10.0.0.5?ctl=1&nbd=2"},
		{"sim://h2/vm", "sim://h2/vm"},
	} {
		got := addrForLog(tc.addr)
		if got != tc.want || strings.Contains(got, "SECRET") {
			t.Errorf("addrForLog(%q) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// TestProgressETA: an estimate only where the rate says something (the
// 4m43s estimates of a guest dirtying nearly as fast as the stream, and
// "0B" at the switch-over, were issue 13's), and the switch-over keeps
// the memory counters.
func TestProgressETA(t *testing.T) {
	mib := int64(1 << 20)
	var got []model.MigrationProgress
	p := newProgressReporter(func(mp model.MigrationProgress) { got = append(got, mp) })
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at      time.Duration
		mp      hypervisor.MigrationProgress
		wantETA float64
	}{
		{0, hypervisor.MigrationProgress{Stage: "disks", DiskTransferred: 0, DiskTotal: 1024 * mib}, 0},
		{2 * time.Second, hypervisor.MigrationProgress{Stage: "disks", DiskTransferred: 256 * mib, DiskTotal: 1024 * mib}, 6},
		{3 * time.Second, hypervisor.MigrationProgress{Stage: "precopy", Transferred: 100 * mib, Remaining: 300 * mib, Total: 1024 * mib,
			Bandwidth: 200 * mib, DirtyRate: 50 * mib}, 2},
		{4 * time.Second, hypervisor.MigrationProgress{Stage: "precopy", Transferred: 400 * mib, Remaining: 300 * mib, Total: 1024 * mib,
			Bandwidth: 200 * mib, DirtyRate: 190 * mib}, 0},
		{5 * time.Second, hypervisor.MigrationProgress{Stage: "switchover"}, 0},
	}
	for i, st := range steps {
		p.observeAt(t0.Add(st.at), st.mp)
		p.mu.Lock()
		last := *p.last
		p.mu.Unlock()
		if last.ETASeconds != st.wantETA {
			t.Errorf("step %d (%s): eta %v, want %v", i, st.mp.Stage, last.ETASeconds, st.wantETA)
		}
	}
	p.stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.last; l.BytesSent != 400*mib || l.BytesTotal != 1024*mib || l.BytesLeft != 0 || l.DiskTotal != 1024*mib {
		t.Errorf("switch-over report %+v: want the memory and disk counters kept, nothing left", *l)
	}
}

// TestMigrateOptionsToTheDriver: a migration's stored options reach the
// driver, the multifd channels (per VM or per cluster) included; zero
// values keep the driver's defaults.
func TestMigrateOptionsToTheDriver(t *testing.T) {
	for _, tc := range []struct {
		in   model.MigrationOptions
		want hypervisor.MigrateOptions
	}{
		{model.MigrationOptions{}, hypervisor.MigrateOptions{}},
		{model.MigrationOptions{DowntimeLimitMs: 100, MultifdChannels: 4, StageTimeoutMs: 2000},
			hypervisor.MigrateOptions{DowntimeLimit: 100 * time.Millisecond, MultifdChannels: 4, StageTimeout: 2 * time.Second}},
		{model.MigrationOptions{AllowPostCopy: true, MultifdChannels: 1, BandwidthBps: 1 << 20},
			hypervisor.MigrateOptions{AllowPostCopy: true, MultifdChannels: 1, BandwidthBps: 1 << 20}},
	} {
		if got := migrateOptions(tc.in); got != tc.want {
			t.Errorf("migrateOptions(%+v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

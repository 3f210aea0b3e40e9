package metering

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/vpool/vpool/internal/model"
)

var (
	t0   = time.Date(2025, 3, 31, 22, 0, 0, 0, time.UTC)
	grid = Grid{PUE: 1.5, Default: 400, Sites: map[string]float64{"eu": 100}}
	kWh  = 3.6e6 // joules
)

// handWorkload is two VMs over three hours across a month's end:
//
//	a: 2 vCPUs, 4 GiB, 20 GiB disk, running on an eu host (100 g/kWh)
//	   the whole time; its NICs count 0, 1000, 4000 bytes and the ledger
//	   0, 1, 3 kWh at 22:00, 23:00 and 01:00.
//	b: 1 vCPU, 1 GiB, 10 GiB disk on a host of no site (400 g/kWh),
//	   stopped until 23:00, then running; 1 kWh from 23:00 to 01:00;
//	   deleted by 02:00.
func handWorkload() []Sample {
	a := func(net int64, j float64) VMSample {
		return VMSample{Project: "p", Name: "a", Host: "h1", Site: "eu", VCPUs: 2, Memory: 4 * model.GiB, Disk: 20 * model.GiB,
			Running: true, Placed: true, NetBytes: net, EnergyJ: j}
	}
	b := func(running bool, j float64) VMSample {
		return VMSample{Project: "p", Name: "b", Host: "h2", VCPUs: 1, Memory: model.GiB, Disk: 10 * model.GiB,
			Running: running, Placed: true, EnergyJ: j}
	}
	return []Sample{
		{At: t0, VMs: []VMSample{a(0, 0), b(false, 0)}},
		{At: t0.Add(time.Hour), VMs: []VMSample{a(1000, kWh), b(true, 0)}},
		{At: t0.Add(3 * time.Hour), VMs: []VMSample{a(4000, 3*kWh), b(true, kWh)}},
		{At: t0.Add(4 * time.Hour), VMs: []VMSample{a(4000, 3*kWh)}},
	}
}

var approx = cmpopts.EquateApprox(0, 1e-9)

// handMeter is a meter that has booked handWorkload (its samples are
// hours apart: no gap bound).
func handMeter() *Meter {
	m := New()
	m.MaxGap = 0
	for _, s := range handWorkload() {
		m.Add(s, grid)
	}
	return m
}

// TestReportByHand compares the meter's report with a hand computation
// of handWorkload.
func TestReportByHand(t *testing.T) {
	m := handMeter()
	march31 := time.Date(2025, 3, 31, 0, 0, 0, 0, time.UTC)
	april1 := march31.AddDate(0, 0, 1)
	tests := []struct {
		name     string
		from, to time.Time
		want     []Line
	}{
		{"March 31", march31, april1, []Line{
			// a: 22–24h = 2 h; net 1000 + half of 3000; 1 + half of 2 kWh; CO2 2 kWh × 1.5 × 100
			{Project: "p", VM: "a", UsageFigures: model.UsageFigures{VCPUHours: 4, MemGiBHours: 8, DiskGiBHours: 40, NetBytes: 2500, EnergyKWh: 2, CO2Grams: 300}},
			// b: stopped 22–23h (disk only), running 23–24h; half a kWh × 1.5 × 400
			// (its deletion, on April 1, is outside the range)
			{Project: "p", VM: "b", UsageFigures: model.UsageFigures{VCPUHours: 1, MemGiBHours: 1, DiskGiBHours: 20, EnergyKWh: 0.5, CO2Grams: 300}},
		}},
		{"April 1", april1, april1.AddDate(0, 0, 1), []Line{
			// a: 00–01h and 01–02h (its last interval books nothing new but time)
			{Project: "p", VM: "a", UsageFigures: model.UsageFigures{VCPUHours: 4, MemGiBHours: 8, DiskGiBHours: 40, NetBytes: 1500, EnergyKWh: 1, CO2Grams: 150}},
			{Project: "p", VM: "b", Deleted: true, UsageFigures: model.UsageFigures{VCPUHours: 1, MemGiBHours: 1, DiskGiBHours: 10, EnergyKWh: 0.5, CO2Grams: 300}},
		}},
		{"both days", march31, april1.AddDate(0, 0, 1), []Line{
			{Project: "p", VM: "a", UsageFigures: model.UsageFigures{VCPUHours: 8, MemGiBHours: 16, DiskGiBHours: 80, NetBytes: 4000, EnergyKWh: 3, CO2Grams: 450}},
			{Project: "p", VM: "b", Deleted: true, UsageFigures: model.UsageFigures{VCPUHours: 2, MemGiBHours: 2, DiskGiBHours: 30, EnergyKWh: 1, CO2Grams: 600}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, monthly := Report(m.Rollups(), tt.from, tt.to)
			if monthly {
				t.Error("a month counted without days")
			}
			if d := cmp.Diff(tt.want, got, approx); d != "" {
				t.Fatalf("report (-hand +meter):\n%s", d)
			}
		})
	}
}

// TestResumeFromStoredRollups: a new leader loads the rollups and books
// the next interval from the stored counters, not from zero.
func TestResumeFromStoredRollups(t *testing.T) {
	samples := handWorkload()
	whole, first, second := New(), New(), New()
	whole.MaxGap, first.MaxGap, second.MaxGap = 0, 0, 0
	for _, s := range samples[:3] {
		whole.Add(s, grid)
	}
	for _, s := range samples[:2] {
		first.Add(s, grid)
	}
	second.Load(first.Dirty(), time.Time{})
	second.Add(samples[2], grid)
	want, _ := Report(whole.Rollups(), t0.AddDate(0, -1, 0), t0.AddDate(0, 1, 0))
	got, _ := Report(second.Rollups(), t0.AddDate(0, -1, 0), t0.AddDate(0, 1, 0))
	if d := cmp.Diff(want, got, approx); d != "" {
		t.Fatalf("resumed (-one leader +two):\n%s", d)
	}
}

func TestMaxGapAndCounterReset(t *testing.T) {
	m := New()
	v := VMSample{Project: "p", Name: "a", VCPUs: 1, Running: true, NetBytes: 5000}
	m.Add(Sample{At: t0, VMs: []VMSample{v}}, grid)
	v.NetBytes = 300 // the NIC's counter started again (a new QEMU after a migration)
	m.Add(Sample{At: t0.Add(time.Hour), VMs: []VMSample{v}}, grid)
	got, _ := Report(m.Rollups(), t0.AddDate(0, 0, -1), t0.AddDate(0, 0, 1))
	if len(got) != 1 || math.Abs(got[0].VCPUHours-DefaultMaxGap.Hours()) > 1e-9 || got[0].NetBytes != 300 {
		t.Fatalf("an hour's gap books %v h and %d bytes; want %v h and 300", got[0].VCPUHours, got[0].NetBytes, DefaultMaxGap.Hours())
	}
}

func TestCompact(t *testing.T) {
	rs := handMeter().Rollups()
	rs = append(rs, model.UsageRollup{Month: "2023-12", Project: "p", VM: "old", Total: model.UsageFigures{VCPUHours: 1}})
	c := Compact(rs, "2025-06")
	var put, del []string
	for _, r := range c.Put {
		put = append(put, r.Month+"/"+r.VM)
		if r.Days != nil {
			t.Errorf("%s/%s keeps its days", r.Month, r.VM)
		}
	}
	for _, r := range c.Delete {
		del = append(del, r.Month+"/"+r.VM)
	}
	// b was deleted in April: its March line stays a line of its own
	wantPut := []string{"2025-03/a", "2025-03/b", "2025-04/a", "2025-04/" + model.MeteringDeletedVMs}
	wantDel := []string{"2023-12/old", "2025-04/b"}
	sortStrings := cmpopts.SortSlices(func(a, b string) bool { return a < b })
	if d := cmp.Diff(wantPut, put, sortStrings); d != "" {
		t.Errorf("put (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantDel, del, sortStrings); d != "" {
		t.Errorf("delete (-want +got):\n%s", d)
	}
	// a report over compacted months still adds up, by month
	after := append(append([]model.UsageRollup{}, c.Put...), rs[0:0]...)
	lines, monthly := Report(after, time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC))
	if !monthly || len(lines) != 3 || lines[1].VM != "a" || math.Abs(lines[1].VCPUHours-8) > 1e-9 ||
		math.Abs(lines[0].VCPUHours+lines[2].VCPUHours-2) > 1e-9 {
		t.Fatalf("compacted report %+v (monthly %v)", lines, monthly)
	}
	if c := Compact(c.Put, "2025-06"); len(c.Put)+len(c.Delete) != 0 {
		t.Fatalf("compacting again changes %d rollups", len(c.Put)+len(c.Delete))
	}
}

func TestGridSeries(t *testing.T) {
	series, err := ParseSeries(strings.NewReader("time,site,g\n2025-03-31T00:00:00Z,eu,50\n2025-03-31T23:00:00Z,eu,70\n2025-03-31T00:00:00Z,,300\n"))
	if err != nil {
		t.Fatal(err)
	}
	g := Grid{Default: 400, Sites: map[string]float64{"eu": 100, "us": 380}, Series: series}
	for _, tt := range []struct {
		site string
		at   time.Time
		want float64
	}{
		{"eu", t0, 50}, {"eu", t0.Add(90 * time.Minute), 70}, {"eu", t0.AddDate(0, 0, -2), 100},
		{"us", t0, 380}, {"ap", t0, 300}, {"ap", t0.AddDate(0, 0, -2), 400}, {"", t0.AddDate(0, 0, -2), 400},
	} {
		if got := g.Intensity(tt.site, tt.at); got != tt.want {
			t.Errorf("intensity %q at %s = %v, want %v", tt.site, tt.at, got, tt.want)
		}
	}
	if _, err := ParseSeries(strings.NewReader("2025-03-31T00:00:00Z,eu,-1\n")); err == nil {
		t.Error("a negative intensity is taken")
	}
}

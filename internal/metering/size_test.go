package metering

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// BenchmarkYearOfRollups books a year of usage for 1,000 VMs in 20
// projects and reports what the store holds at
// the end of it (a sample every two hours: the rollups hold days, not
// samples, so the rate does not change their size): the previous and current months with a figure per day,
// ten older months with totals only.
func BenchmarkYearOfRollups(b *testing.B) {
	for b.Loop() {
		m := New()
		m.MaxGap = 3 * time.Hour
		start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		vms := make([]VMSample, 1000)
		for i := range vms {
			vms[i] = VMSample{Project: fmt.Sprintf("project-%02d", i%20), Name: fmt.Sprintf("vm-%04d", i), Host: fmt.Sprintf("host-%02d", i%40),
				Site: "eu-west", VCPUs: 1 + i%8, Memory: model.Bytes(1+i%16) * model.GiB, Disk: model.Bytes(10+i%100) * model.GiB,
				Running: true, Placed: true}
		}
		grid := Grid{PUE: 1.4, Default: 300, Sites: map[string]float64{"eu-west": 56}}
		var end time.Time
		for h := 0; h < 365*24; h += 2 {
			end = start.Add(time.Duration(h) * time.Hour)
			for i := range vms {
				vms[i].NetBytes += int64(2000 * (i + 1))
				vms[i].EnergyJ += float64(7200 * (20 + i%50))
			}
			m.Add(Sample{At: end, VMs: vms}, grid)
		}
		c := Compact(m.Rollups(), Month(end))
		kept := map[string]model.UsageRollup{}
		for _, r := range m.Rollups() {
			kept[r.Month+"/"+r.Project+"/"+r.VM] = r
		}
		for _, r := range c.Delete {
			delete(kept, r.Month+"/"+r.Project+"/"+r.VM)
		}
		for _, r := range c.Put {
			kept[r.Month+"/"+r.Project+"/"+r.VM] = r
		}
		var bytes, detailed, detailedBytes int
		for k, r := range kept {
			v, _ := json.Marshal(r)
			bytes += len("/vpool/metering/") + len(k) + len(v)
			if r.Days != nil {
				detailed++
				detailedBytes += len(v)
			}
		}
		b.ReportMetric(float64(bytes)/(1<<20), "MiB/year-1000VMs")
		b.ReportMetric(float64(len(kept)), "records")
		b.ReportMetric(float64(detailedBytes)/float64(max(detailed, 1)), "bytes/VM-month-with-days")
		b.ReportMetric(float64(bytes-detailedBytes)/float64(max(len(kept)-detailed, 1)), "bytes/VM-month-compacted")
	}
}

// TestShardBytesBounded: a shard of DefaultPerShard rollups with a
// figure for every day of a month, the longest names and figures of
// every digit, stays under 300 KiB (one transaction of the task's; etcd
// takes requests up to 1.5 MiB).
func TestShardBytesBounded(t *testing.T) {
	long := func(c byte) string {
		b := make([]byte, 63)
		for i := range b {
			b[i] = c
		}
		return string(b)
	}
	f := model.UsageFigures{VCPUHours: 1.234567891e+15, MemGiBHours: -1.234567891e-15, DiskGiBHours: 1.234567891e+200,
		NetBytes: math.MinInt64, EnergyKWh: 1.234567891e+15, CO2Grams: 1.234567891e+15}
	sh := model.UsageRollupShard{Month: "2025-03", Project: long('p'), Shard: 1 << 30}
	for i := range DefaultPerShard {
		r := model.UsageRollup{Month: "2025-03", Project: long('p'), VM: long('v'), Host: long('h'), Total: f, Deleted: true,
			LastAt: time.Date(2025, 3, 31, 23, 59, 59, 999999999, time.FixedZone("x", 3600)), LastNet: math.MaxInt64,
			LastEnergyJ: f.VCPUHours, Shape: &model.UsageShape{VCPUs: math.MaxInt32, Memory: math.MaxInt64, Disk: math.MaxInt64,
				Running: true, Placed: true, Site: long('s')}}
		for d := 1; d <= 31; d++ {
			r.Days = append(r.Days, model.UsageDay{Day: d, UsageFigures: f})
		}
		r.VM = fmt.Sprintf("%s%d", r.VM[:60], i)
		sh.Rollups = append(sh.Rollups, r)
	}
	b, err := json.Marshal(sh)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 300<<10 {
		t.Fatalf("a full shard is %d bytes, want at most %d", len(b), 300<<10)
	}
	t.Logf("a full shard at its largest: %d bytes", len(b))
}

package metering

import (
	"fmt"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// TestAddAllocationsAtRest: the leader books every VM once a minute
// (100,000 at 10,000 hosts); a VM whose shape holds costs no new shape
// and no month's name of its own (one shape and two months' names a VM
// a minute before).
func TestAddAllocationsAtRest(t *testing.T) {
	const n = 200
	m := New()
	at := time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)
	s := Sample{At: at}
	for i := range n {
		s.VMs = append(s.VMs, VMSample{Project: "p", Name: fmt.Sprintf("vm-%04d", i), Host: "h1", VCPUs: 2, Memory: model.GiB,
			Running: true, Placed: true, NetBytes: int64(i)})
	}
	m.Add(s, grid)
	step := 0
	allocs := testing.AllocsPerRun(10, func() {
		step++
		s.At = at.Add(time.Duration(step) * time.Minute)
		for i := range s.VMs {
			s.VMs[i].NetBytes += 100
		}
		m.Add(s, grid)
	})
	perVM := allocs / n
	t.Logf("%.2f allocations a VM a sample", perVM)
	if perVM > 5.5 {
		t.Fatalf("booking a sample allocates %.2f times a VM, want at most 5.5", perVM)
	}
	r := m.rollups[rollupKey("2025-03", "p", "vm-0007")]
	if r == nil || r.Shape == nil || r.Shape.VCPUs != 2 || r.LastNet != 7+100*int64(step) {
		t.Fatalf("rollup %+v", r)
	}
}

package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/test/internal/cluster"
)

// BenchmarkThawToFence measures what the chaos sampler can catch: a host
// frozen (SIGSTOP) past the fence timeout, its VMs restartable
// elsewhere, is thawed; from the SIGCONT until its agent's self-fence has
// killed them, its VMs run on. Each iteration freezes one agent of 30
// running VMs for the fence timeout plus 2 s, thaws it and reads its
// driver's state in a tight loop until every VM was seen killed:
// thaw-to-fenced-ms is that window (min / median / max of the
// iterations), reads-running how many reads saw a VM not yet killed. The sampler reads every
// 500 ms, so a window of w ms is caught by about w/500 of long freezes.
func BenchmarkThawToFence(b *testing.B) {
	cl := cluster.Start(b, 1)
	ctx := context.Background()
	pol, err := cl.C.Policy(ctx)
	if err != nil {
		b.Fatal(err)
	}
	pol.HA = chaosPolicy()
	if _, err := cl.C.SetPolicy(ctx, *pol); err != nil {
		b.Fatal(err)
	}
	a := cl.StartAgents(b, 1, cluster.AgentOptions{SimCPUs: 64, SimMemory: "64GiB"})[0]
	const n = 30
	r := rand.New(rand.NewPCG(1, 1))
	for i := range n {
		spec := vmSpec(r)
		spec.Disks[0].Pool = ""
		if _, err := cl.C.CreateVM(ctx, "default", api.VMCreateRequest{Name: fmt.Sprintf("t%02d", i), Spec: spec}); err != nil {
			b.Fatal(err)
		}
	}
	running := func() (map[string]bool, error) {
		vms, err := a.SimVMs()
		if err != nil {
			return nil, err
		}
		out := map[string]bool{}
		for id, v := range vms {
			out[id] = v.State == hypervisor.StateRunning && !v.Incoming
		}
		return out, nil
	}
	allRunning := func() bool {
		run, err := running()
		if err != nil || len(run) != n {
			return false
		}
		for _, r := range run {
			if !r {
				return false
			}
		}
		return true
	}
	var windows []float64
	reads := 0
	b.Logf("load average %s", loadAvg())
	b.ResetTimer()
	for range b.N {
		cluster.Eventually(b, "all VMs running on the host", 2*time.Minute, allRunning)
		a.Freeze()
		time.Sleep(time.Duration(chaosPolicy().FenceMillis+2000) * time.Millisecond)
		a.Thaw()
		t0 := time.Now()
		// Each VM counts as killed at the first read that shows it not
		// running (the agent restarts them on this host once it renews
		// again: a read with none running may never come).
		killed := map[string]bool{}
		for len(killed) < n {
			run, err := running()
			if err != nil {
				continue // the file being replaced
			}
			some := false
			for id, r := range run {
				if !r {
					killed[id] = true
				} else if !killed[id] {
					some = true
				}
			}
			if some {
				reads++
			}
			if time.Since(t0) > 30*time.Second {
				b.Fatalf("the thawed host still runs %d VMs after 30 s", n-len(killed))
			}
		}
		windows = append(windows, float64(time.Since(t0).Microseconds())/1000)
	}
	b.StopTimer()
	b.Logf("load average %s", loadAvg())
	slices.Sort(windows)
	b.ReportMetric(windows[0], "thaw-to-fenced-min-ms")
	b.ReportMetric(windows[len(windows)/2], "thaw-to-fenced-median-ms")
	b.ReportMetric(windows[len(windows)-1], "thaw-to-fenced-max-ms")
	b.ReportMetric(float64(reads)/float64(b.N), "reads-running/op")
	b.ReportMetric(0, "ns/op")
}

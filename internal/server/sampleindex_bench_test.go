package server

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// BenchmarkConsistentWaitDuringSamples measures the cache's wait of a
// consistent read (Server-Timing's wait) while usage samples arrive as
// from a server of 10,000 hosts and 100,000 VMs: 79 records of 128
// hosts with 10 VMs each, here a burst every 2 s instead of every 30 s.
// A read every 5 ms.
func BenchmarkConsistentWaitDuringSamples(b *testing.B) {
	st := memstore.New()
	defer st.Close()
	v := newView(st, nil, newUsageHub().own)
	v.start(nopWarn{})
	defer v.stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := v.c.WaitSynced(ctx); err != nil {
		b.Fatal(err)
	}
	recs := sampleRecords(79, 128, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			for i, r := range recs {
				if _, _, err := st.Txn(ctx, nil, []store.Op{store.Put(store.SampleKey("elsewhere", i), r)}); err != nil {
					return
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}()
	waits := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		_, t, err := v.consistentTimed(ctx)
		if err != nil {
			b.Fatal(err)
		}
		waits = append(waits, t.wait)
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	cancel()
	<-done
	slices.Sort(waits)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(waits[len(waits)/2]), "wait-p50-ms")
	b.ReportMetric(ms(waits[len(waits)*99/100]), "wait-p99-ms")
	b.ReportMetric(ms(waits[len(waits)-1]), "wait-max-ms")
}

// sampleRecords are n usage sample records of hosts hosts with vms VMs
// each, as a server writes them.
func sampleRecords(n, hosts, vms int) [][]byte {
	at := time.Now().UTC()
	out := make([][]byte, n)
	for i := range out {
		s := model.UsageSample{Server: "elsewhere", At: at}
		for h := range hosts {
			hs := model.HostSample{Host: fmt.Sprintf("h%05d", i*hosts+h), Seen: at, LeaseTTL: 31,
				Usage: model.HostUsage{CPUPercent: 37.5, MemoryUsed: 12 * model.GiB}}
			for k := range vms {
				hs.VMs = append(hs.VMs, model.VMSample{Key: fmt.Sprintf("p%d/vm-%05d-%d", k%8, i*hosts+h, k),
					Usage: model.VMUsage{CPUPercent: 12.5, Memory: 900 * model.MiB, CPUTimeNs: 123456789012, DiskRead: 1 << 30, DiskWrite: 1 << 29, NetRx: 1 << 28, NetTx: 1 << 27}})
			}
			s.Hosts = append(s.Hosts, hs)
		}
		b, err := json.Marshal(s)
		if err != nil {
			panic(err)
		}
		out[i] = b
	}
	return out
}

package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// benchStores are the stores the benchmarks run on: a real embedded
// etcd (fsync on, as in production) and memstore for comparison.
func benchStores() []struct {
	name string
	make func(b *testing.B) store.Store
} {
	return []struct {
		name string
		make func(b *testing.B) store.Store
	}{
		{"etcd", func(b *testing.B) store.Store { return startEtcd(b, false) }},
		{"memstore", func(b *testing.B) store.Store { return nil }},
	}
}

// BenchmarkCreateVMs measures VM creates accepted per second through the
// HTTP API by 16 concurrent clients, into one project (all contending for
// its usage key) and spread over 8 projects.
func BenchmarkCreateVMs(b *testing.B) {
	for _, sb := range benchStores() {
		for _, projects := range []int{1, 8} {
			b.Run(fmt.Sprintf("%s/projects=%d", sb.name, projects), func(b *testing.B) {
				ts := startServer(b, sb.make(b))
				admin := ts.AdminToken()
				for p := range projects {
					ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: fmt.Sprintf("b%d", p)}, nil)
				}
				var seq atomic.Int64
				b.SetParallelism(8) // × GOMAXPROCS (2 here) = 16 clients
				b.ResetTimer()
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						n := seq.Add(1)
						path := fmt.Sprintf("/api/v1/vms?project=b%d", n%int64(projects))
						if code, e := ts.call("POST", path, admin, vmReq(fmt.Sprintf("vm-%d", n)), nil); code != 201 {
							b.Errorf("create: %d %+v", code, e)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "creates/s")
			})
		}
	}
}

// BenchmarkList10kVMs measures the latency of GET /api/v1/vms over 10,000
// stored VMs (one project) and reports its p99.
func BenchmarkList10kVMs(b *testing.B) {
	for _, sb := range benchStores() {
		b.Run(sb.name, func(b *testing.B) {
			st := sb.make(b)
			if sb.name == "etcd" {
				st = startEtcd(b, true) // loading 10k VMs needs no fsync; the listing is what is measured
			}
			ts := startServer(b, st)
			ctx := context.Background()
			spec := vmReq("x").Spec
			if err := spec.Validate(); err != nil {
				b.Fatal(err)
			}
			for i := 0; i < 10000; i += 50 {
				batch := make([]*model.VM, 50)
				for j := range batch {
					batch[j] = &model.VM{Meta: model.Meta{Name: fmt.Sprintf("vm-%05d", i+j)}, Spec: spec}
				}
				if _, err := ts.Repo().CreateVMs(ctx, "default", batch); err != nil {
					b.Fatal(err)
				}
			}
			req, _ := http.NewRequest("GET", "http://"+ts.Addr()+"/api/v1/vms", nil)
			req.Header.Set("Authorization", "Bearer "+ts.AdminToken())
			lat := make([]time.Duration, 0, b.N)
			size := 0
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				resp, err := ts.client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat = append(lat, time.Since(t0))
				size = int(n)
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			p99 := lat[min(len(lat)-1, len(lat)*99/100)]
			b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(size)/(1<<20), "MiB/list")
		})
	}
}

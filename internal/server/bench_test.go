package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
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

// BenchmarkListFirstPage measures the first page (limit=500) of the VM
// list of every project over 10,000 running VMs in 200 projects, as
// BenchmarkFleet asks for it (an admin, consistent), and a tenant's
// first page of its project (redacted), with the allocations of a page.
func BenchmarkListFirstPage(b *testing.B) {
	st := startEtcd(b, true)
	ts := startServer(b, st)
	ctx := context.Background()
	admin := ts.AdminToken()
	spec := vmReq("x").Spec
	started := time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)
	for p := range 200 {
		project := fmt.Sprintf("p%03d", p)
		ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: project}, nil)
		batch := make([]*model.VM, 50)
		for j := range batch {
			batch[j] = &model.VM{Meta: model.Meta{Name: fmt.Sprintf("vm-%05d", p*50+j)}, Spec: spec}
		}
		if _, err := ts.Repo().CreateVMs(ctx, project, batch); err != nil {
			b.Fatal(err)
		}
		for j := range batch {
			if _, err := ts.Repo().UpdateVM(ctx, project, batch[j].Name, func(v *model.VM) error {
				v.Status = model.VMStatus{Phase: model.PhaseRunning, Host: fmt.Sprintf("host-%04d", (p*50+j)/10), StartedAt: &started,
					ObservedAt: started, Addresses: []string{"10.0.0.1"}, Usage: model.VMUsage{CPUPercent: 12.5, Memory: 40 * model.MiB},
					Disks: []model.DiskStatus{{Name: "disk0", Size: model.GiB}}}
				if j == 0 {
					v.Status.Message = "started after 2 attempts: agent https://10.0.0.9:7443 refused"
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
	}
	tenant := ts.tokenFor("p007", model.RoleMember)
	for _, tc := range []struct{ name, path, token string }{
		{"admin-all-projects", "/api/v1/vms?all-projects=true&limit=500", admin},
		{"tenant", "/api/v1/vms?project=p007&limit=500", tenant},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req, _ := http.NewRequest("GET", "http://"+ts.Addr()+tc.path, nil)
			req.Header.Set("Authorization", "Bearer "+tc.token)
			lat := make([]time.Duration, 0, b.N)
			size := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				resp, err := ts.client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("list: %s", resp.Status)
				}
				lat = append(lat, time.Since(t0))
				size = int(n)
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(size)/1024, "KiB/page")
		})
	}
}

// plainStore hides a store's RevisionReader: the revision is read by a
// List of one key over the client (gRPC and TLS to the member), as
// before the in-process read.
type plainStore struct{ store.Store }

// BenchmarkConsistentRead measures the consistent read's revision and
// cache wait on an embedded member (fsync off), read in process or over
// the client, by 1 and 32 concurrent readers; store-reads/op is how many
// revision reads the readers shared (1 without sharing).
func BenchmarkConsistentRead(b *testing.B) {
	st := startEtcd(b, true)
	for _, tc := range []struct {
		name string
		st   store.Store
	}{{"in-process", st}, {"client", plainStore{st}}} {
		for _, readers := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/readers=%d", tc.name, readers), func(b *testing.B) {
				v := newView(tc.st, nil, newUsageHub().own)
				v.start(nopWarn{})
				defer v.stop()
				ctx := context.Background()
				if err := v.c.WaitSynced(ctx); err != nil {
					b.Fatal(err)
				}
				reads0 := v.c.RevReads()
				b.SetParallelism(max(1, readers/runtimeProcs()))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := v.consistent(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.StopTimer()
				b.ReportMetric(float64(v.c.RevReads()-reads0)/float64(b.N), "store-reads/op")
			})
		}
	}
}

type nopWarn struct{}

func (nopWarn) Warn(string, ...any) {}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

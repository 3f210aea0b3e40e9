package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// BenchmarkAuditOverhead measures VM creates per second through the
// HTTP API with the audit trail on and off, on a real embedded etcd with
// fsync (as in production): 16 concurrent clients over 8 projects, and
// one client alone (each create waits for the one before, so any latency
// the trail adds shows). The target is at most 10 % fewer creates/s with
// the trail on (docs/audit.md has the figures).
func BenchmarkAuditOverhead(b *testing.B) {
	for _, sb := range benchStores() {
		for _, clients := range []int{16, 1} {
			for _, audit := range []bool{false, true} {
				b.Run(fmt.Sprintf("%s/clients=%d/audit=%v", sb.name, clients, audit), func(b *testing.B) {
					benchAuditCreates(b, sb.make(b), clients, audit)
				})
			}
		}
	}
}

func benchAuditCreates(b *testing.B, st store.Store, clients int, audit bool) {
	ts := startServer(b, st, func(c *Config) { c.noAudit = !audit })
	admin := ts.AdminToken()
	for p := range 8 {
		ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: fmt.Sprintf("b%d", p)}, nil)
	}
	var seq atomic.Int64
	create := func() {
		n := seq.Add(1)
		path := fmt.Sprintf("/api/v1/vms?project=b%d", n%8)
		if code, e := ts.call("POST", path, admin, vmReq(fmt.Sprintf("vm-%d", n)), nil); code != 201 {
			b.Errorf("create: %d %+v", code, e)
		}
	}
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	if clients == 1 {
		for range b.N {
			create()
		}
	} else {
		b.SetParallelism(clients / 2) // × GOMAXPROCS (2 here)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				create()
			}
		})
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "creates/s")
	// CPU time per create (this process: server, store and clients) is
	// what the trail costs where the machine is shared and wall time is
	// noise; with etcd, the member's fsyncs are wall time, not CPU.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/create")
	if audit {
		st := ts.audit.Stats()
		b.ReportMetric(float64(st.Written)/float64(max(st.Batches, 1)), "records/batch")
	}
}

// BenchmarkAuditOverheadPaired runs two servers side by side, one with
// the trail and one without, each on its own store, and sends every
// client's creates to both in turn (which one goes first alternates):
// whatever load the machine has at any moment falls on both alike, so
// the ratio of their mean create latencies is the trail's cost even on a
// busy machine, where back-to-back runs drift. Reports the mean latency
// of each (µs) and overhead-% = on/off − 1; with closed-loop clients a
// latency overhead is the same fraction of creates/s.
func BenchmarkAuditOverheadPaired(b *testing.B) {
	for _, sb := range benchStores() {
		for _, clients := range []int{16, 1} {
			b.Run(fmt.Sprintf("%s/clients=%d", sb.name, clients), func(b *testing.B) {
				pair := [2]*testServer{
					startServer(b, sb.make(b), func(c *Config) { c.noAudit = true }),
					startServer(b, sb.make(b)),
				}
				var seq atomic.Int64
				var spent [2]atomic.Int64 // ns in creates: off, on
				create := func(ts *testServer, n int64) time.Duration {
					start := time.Now()
					if code, e := ts.call("POST", "/api/v1/vms", ts.AdminToken(), vmReq(fmt.Sprintf("vm-%d", n)), nil); code != 201 {
						b.Errorf("create: %d %+v", code, e)
					}
					return time.Since(start)
				}
				step := func() {
					n := seq.Add(1)
					first := int(n % 2)
					spent[first].Add(int64(create(pair[first], n)))
					spent[1-first].Add(int64(create(pair[1-first], n)))
				}
				b.ResetTimer()
				if clients == 1 {
					for range b.N {
						step()
					}
				} else {
					b.SetParallelism(clients / 2) // × GOMAXPROCS (2 here)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							step()
						}
					})
				}
				off, on := float64(spent[0].Load())/float64(b.N), float64(spent[1].Load())/float64(b.N)
				b.ReportMetric(off/1e3, "µs/create-off")
				b.ReportMetric(on/1e3, "µs/create-on")
				b.ReportMetric((on/off-1)*100, "overhead-%")
			})
		}
	}
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkVerifyThroughAPI measures `vpool audit verify` end to end on a
// window of 20,000 records: the records read page by page over HTTP,
// then the chain, checkpoints and head verified (records/s).
func BenchmarkVerifyThroughAPI(b *testing.B) {
	ts := startServer(b, nil)
	ctx := context.Background()
	const n = 20000
	for i := range n {
		if err := ts.audit.Record(ctx, model.AuditRecord{Kind: model.AuditKindAPI, Action: "POST /api/v1/vms", Project: "p",
			Object: fmt.Sprintf("vm/p/vm-%d", i), Outcome: "ok", Status: 201,
			Actor: &model.AuditActor{TokenID: "abcdef123456", Role: model.RoleMember, Project: "p", Source: "127.0.0.1:40000"}}); err != nil {
			b.Fatal(err)
		}
	}
	if err := ts.audit.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var records int
	for b.Loop() {
		rep := verifyThroughAPI(b, ts)
		records += rep.Records
	}
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
}

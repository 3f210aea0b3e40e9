package placement

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// BenchmarkPlacementsThroughAPI measures committed placements per second
// end to end: VMs created through the REST API (16 concurrent clients
// creating one VM per request, or batches of 50) on a node whose
// scheduling controller commits each placement in its own etcd
// transaction, on an embedded etcd member with fsync on. Hosts (simulated:
// no agents) are registered directly in the store. The clock runs from
// the first create to the last placement seen through a watch.
//
//	go test ./test/placement -run XXX -bench PlacementsThroughAPI -benchtime 1x
func BenchmarkPlacementsThroughAPI(b *testing.B) {
	const hosts, vms = 200, 1000
	for _, mode := range []string{"single", "batch50"} {
		b.Run(fmt.Sprintf("%s/hosts=%d/vms=%d", mode, hosts, vms), func(b *testing.B) {
			s := startStack(b, startEtcd(b, false))
			ctx := context.Background()
			if _, err := s.repo.CreateProject(ctx, &model.Project{Meta: model.Meta{Name: "p"}}); err != nil {
				b.Fatal(err)
			}
			seedHosts(b, s.repo, hosts, func(_ int, h *model.Host) {
				h.Capacity = model.Resources{CPUs: 64, Memory: 512 * model.GiB, Disk: 64 * model.TiB}
			})
			var total, creating time.Duration
			for i := 0; b.Loop(); i++ {
				c, p := placeThroughAPI(b, s, mode, fmt.Sprintf("r%d", i), vms)
				creating, total = creating+c, total+p
			}
			b.ReportMetric(float64(vms*b.N)/total.Seconds(), "placements/s")
			b.ReportMetric(float64(vms*b.N)/creating.Seconds(), "creates/s")
		})
	}
}

// placeThroughAPI creates n VMs named PREFIX-... through the API and
// returns the time until the last create was answered and until every
// VM is placed.
func placeThroughAPI(b *testing.B, s *stack, mode, prefix string, n int) (created, placedIn time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	_, rev, err := s.st.List(ctx, store.VMsPrefix+"p/"+prefix+"-")
	if err != nil {
		b.Fatal(err)
	}
	placed := make(chan struct{})
	go func() { watchPlaced(ctx, b, s.st, prefix, rev+1, n); close(placed) }()
	spec := func(i int) model.VMSpec {
		return model.VMSpec{VCPUs: 1 + i%4, Memory: model.Bytes(1+i%8) * model.GiB, Power: model.PowerRunning,
			Disks: []model.Disk{{Name: "root", Size: 10 * model.GiB}}}
	}
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	workers, per := 16, 1
	if mode == "batch50" {
		workers, per = 4, 50
	}
	for range workers {
		wg.Go(func() {
			for {
				first := int(next.Add(int64(per))) - per
				if first >= n {
					return
				}
				if per == 1 {
					if _, err := s.client.CreateVM(ctx, "p", api.VMCreateRequest{Name: fmt.Sprintf("%s-%05d", prefix, first), Spec: spec(first)}); err != nil {
						b.Error(err)
						return
					}
					continue
				}
				items := make([]api.VMCreateRequest, 0, per)
				for i := first; i < min(first+per, n); i++ {
					items = append(items, api.VMCreateRequest{Name: fmt.Sprintf("%s-%05d", prefix, i), Spec: spec(i)})
				}
				if _, err := s.client.CreateVMs(ctx, "p", api.VMBatchRequest{VMs: items}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	created = time.Since(start)
	select {
	case <-placed:
	case <-ctx.Done():
		b.Fatalf("not all %d VMs placed", n)
	}
	return created, time.Since(start)
}

// watchPlaced returns once n VMs of prefix have a host.
func watchPlaced(ctx context.Context, b *testing.B, st store.Store, prefix string, from int64, n int) {
	seen := map[string]bool{}
	for resp := range st.Watch(ctx, store.VMsPrefix+"p/"+prefix+"-", from) {
		if resp.Err != nil {
			b.Error(resp.Err)
			return
		}
		for _, ev := range resp.Events {
			if ev.Type != store.EventPut || seen[ev.KV.Key] {
				continue
			}
			vm, err := state.DecodeVM(ev.KV)
			if err != nil {
				b.Error(err)
				return
			}
			if vm.Status.Host != "" {
				seen[ev.KV.Key] = true
			}
		}
		if len(seen) == n {
			return
		}
	}
}

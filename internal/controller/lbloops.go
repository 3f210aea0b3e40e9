package controller

import (
	"context"
	"time"

	"github.com/vpool/vpool/internal/store"
)

// lbLoops are the load balancer and scaling group controllers: each its
// own goroutine and work queue, poked by the cache's VM, host and
// liveness changes, by watches of their own prefixes, and every second
// (drain timeouts, cooldowns, schedules).
func (r *reconciler) lbLoops(gap, second time.Duration) []*loop {
	return []*loop{
		{name: "balancers", run: r.balancers, every: second, gap: gap,
			prefixes: []string{store.VMsPrefix, store.HostsPrefix, store.AlivePrefix}, watch: []string{store.LBsPrefix, store.GroupsPrefix}},
		{name: "groups", run: r.groups, every: second, gap: gap,
			prefixes: []string{store.VMsPrefix}, watch: []string{store.GroupsPrefix, store.LBsPrefix}},
	}
}

// watchPrefix pokes kick on every change under prefix until ctx ends,
// watching again when a watch breaks.
func (r *reconciler) watchPrefix(ctx context.Context, prefix string, kick chan struct{}) {
	for ctx.Err() == nil {
		for resp := range r.repo.Store().Watch(ctx, prefix, 0) {
			if resp.Err != nil {
				break
			}
			poke(kick)
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return
		}
	}
}

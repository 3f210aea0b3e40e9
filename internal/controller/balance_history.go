package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"strings"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// The balancer's usage history — each VM's CPU samples, one per round —
// is what its planners decide from beside the current usage. It lives in
// the store in shards of the VMs of many hosts (model.BalanceHistory:
// about 128 hosts or 2,048 VMs a shard, as the energy ledger's; one
// record per host before issue 14's fifth round, read still and deleted
// at the next round), written every round before the plan is applied, and a new term reads it back with
// the time of the last round: after a failover the next round comes when
// it would have come and sees the samples the old leader saw, so the
// failover changes no decision (docs/ha.md). Samples are kept in memory
// exactly as stored (ten-thousandths of a VM's vCPUs).

// historySample rounds a utilisation to the stored precision.
func historySample(u float64) float64 {
	return math.Round(u*model.BalanceHistoryScale) / model.BalanceHistoryScale
}

// historyBatch and historyTxnBytes keep the history's transactions
// under etcd's op cap and its request size.
const (
	historyBatch    = 100
	historyTxnBytes = 512 << 10
)

// Sizes of the history's shards: about historyHostsPerShard hosts or
// historyVMsPerShard VMs, whichever comes first (some 200 KiB of JSON at
// 30 samples a VM), so that a round writes a key per 128 hosts, not one
// per host (0.23 keys per host a minute at 1,000 hosts: docs/scale.md).
const (
	historyHostsPerShard = 128
	historyVMsPerShard   = 2048
)

// historyShardOf is the shard of n that host's VMs go to.
func historyShardOf(host string, n int) int {
	f := fnv.New32a()
	_, _ = f.Write([]byte(host))
	return int(f.Sum32() % uint32(n))
}

// loadBalanceHistory reads the stored history once per term: every VM's
// samples (from the newest record holding it, should a VM have moved)
// and the last round's time.
func (r *reconciler) loadBalanceHistory(ctx context.Context) error {
	g := r.bal
	if g.loaded {
		return nil
	}
	kvs, _, err := r.repo.Store().List(ctx, store.BalanceHistoryPrefix)
	if err != nil {
		return fmt.Errorf("controller: read balance history: %w", err)
	}
	g.history, g.written = map[string][]float64{}, map[string][]byte{}
	newest := map[string]int64{}
	for _, kv := range kvs {
		var rec model.BalanceHistory
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			r.m.log.Warn("balance history record unreadable; dropped", "key", kv.Key, "err", err)
			continue
		}
		g.written[kv.Key] = kv.Value
		if rec.Round.After(g.lastRound) {
			g.lastRound = rec.Round
		}
		for vm, units := range rec.VMs {
			if rec.Round.UnixNano() < newest[vm] {
				continue
			}
			newest[vm] = rec.Round.UnixNano()
			hist := make([]float64, len(units))
			for i, u := range units {
				hist[i] = float64(u) / model.BalanceHistoryScale
			}
			g.history[vm] = hist
		}
	}
	g.loaded = true
	return nil
}

// persistBalanceHistory writes the records that changed this round and
// deletes those of hosts that hold no sampled VM any more.
func (r *reconciler) persistBalanceHistory(ctx context.Context) error {
	g := r.bal
	vms := r.c.vmList(func(vm *model.VM) bool { _, ok := g.history[vm.Key()]; return ok && vm.Status.Host != "" })
	hosts := map[string]bool{}
	for _, vm := range vms {
		hosts[vm.Status.Host] = true
	}
	shards := max(1, (len(hosts)+historyHostsPerShard-1)/historyHostsPerShard, (len(vms)+historyVMsPerShard-1)/historyVMsPerShard)
	recs := map[string]*model.BalanceHistory{}
	for _, vm := range vms {
		key := store.BalanceHistoryShardKey(historyShardOf(vm.Status.Host, shards))
		rec := recs[key]
		if rec == nil {
			rec = &model.BalanceHistory{Round: g.lastRound, VMs: map[string][]uint16{}}
			recs[key] = rec
		}
		hist := g.history[vm.Key()]
		units := make([]uint16, len(hist))
		for i, u := range hist {
			units[i] = uint16(math.Round(min(max(u, 0), 1) * model.BalanceHistoryScale))
		}
		rec.VMs[vm.Key()] = units
	}
	now := make(map[string][]byte, len(recs))
	var ops []store.Op
	for key, rec := range recs {
		b := mustJSON(rec)
		now[key] = b
		if !bytes.Equal(b, g.written[key]) {
			ops = append(ops, store.Put(key, b))
		}
	}
	for key := range g.written {
		if _, keep := now[key]; !keep && strings.HasPrefix(key, store.BalanceHistoryPrefix) {
			ops = append(ops, store.Delete(key))
		}
	}
	// puts before deletes: a write cut short may leave a VM in two
	// records (the load keeps the newer round's), never in none
	for len(ops) > 0 {
		n, size := 0, 0
		for n < len(ops) && n < historyBatch && (n == 0 || size+len(ops[n].Value) <= historyTxnBytes) {
			size += len(ops[n].Value)
			n++
		}
		if _, _, err := r.repo.Txn(ctx, nil, ops[:n]); err != nil {
			return fmt.Errorf("controller: store balance history: %w", err)
		}
		ops = ops[n:]
	}
	g.written = now
	return nil
}

package server

import (
	"context"

	"github.com/vpool/vpool/internal/metering"
	"github.com/vpool/vpool/internal/metering/meterstore"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/watchcache"
)

// MeterSource is the leader's metering source read from this server's
// view: the same sample as meterstore.StoreSource (every VM with its
// host's site, its measured NIC counters and its energy), without
// listing and decoding every VM and host record from the store once a
// minute (at 100,000 VMs about 0.8 GiB allocated and a second of CPU
// each time: docs/scale.md, sixth round). The energy ledger is still
// read from the store.
func (s *Server) MeterSource() meterstore.Source { return viewMeterSource{s} }

type viewMeterSource struct{ s *Server }

// Sample implements meterstore.Source.
func (m viewMeterSource) Sample(ctx context.Context) (metering.Sample, error) {
	s := m.s
	if _, err := s.view.consistent(ctx); err != nil {
		return metering.Sample{}, err
	}
	var vms []*model.VM // shared with the view: read only
	sites := map[string]string{}
	s.view.c.Read(func(int64) {
		s.view.hosts.Each(store.HostsPrefix, "", func(it *watchcache.Item) bool {
			if h, ok := it.Obj.(*model.Host); ok {
				sites[h.Name] = h.Labels[model.SiteLabel]
			}
			return true
		})
		vms = make([]*model.VM, 0, s.view.vms.Len())
		s.view.vms.Each(store.VMsPrefix, "", func(it *watchcache.Item) bool {
			if vm := cachedVMOf(it); vm != nil {
				vms = append(vms, vm)
			}
			return true
		})
	})
	ledger, err := s.repo.EnergyLedger(ctx)
	if err != nil {
		return metering.Sample{}, err
	}
	out := metering.Sample{At: s.now(), VMs: make([]metering.VMSample, 0, len(vms))}
	for _, vm := range vms {
		key := vm.Key()
		smp := meterstore.VMSampleOf(vm, sites[vm.Status.Host], ledger.VMJ[key])
		if vm.Status.Host != "" {
			// as StoreSource: the measured counters when newer than the record's
			if u, at, ok := s.VMUsage(key); ok && !at.Before(vm.Status.ObservedAt) {
				smp.NetBytes = u.NetRx + u.NetTx
			}
		}
		out.VMs = append(out.VMs, smp)
	}
	return out, nil
}

package server

import (
	"strings"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// netViewPrefixes are what the hosts' network views are made of: a load
// balancer is a port of its network on its host, like a VM's NIC.
var netViewPrefixes = []string{store.NetworksPrefix, store.SecGroupsPrefix, store.VMsPrefix, store.HostsPrefix, store.MigrationsPrefix, store.LBsPrefix}

// LBPortVM and LBPortNIC name a balancer's port in the network views
// (api.NICView): "lb/NAME" can never be a VM's name.
func LBPortVM(name string) string { return "lb/" + name }

// LBPortNIC is the NIC name of a balancer's port.
const LBPortNIC = "vip"

// applyLBPort folds a balancer into the network hub's ports: one port of
// its network on its host, with its virtual IP and MAC, open to its
// listen port. A balancer with no host yet, or being deleted, has none.
func applyLBPort(kv store.KV, deleted bool, vms map[string]vmNet) bool {
	id := "lb:" + strings.TrimPrefix(kv.Key, store.LBsPrefix)
	old, had := vms[id]
	var b *model.LoadBalancer
	if !deleted {
		b, _ = state.DecodeLB(kv)
	}
	if b == nil || b.DeletedAt != nil || b.Status.Host == "" || b.Status.Phase != model.LBActive {
		delete(vms, id)
		return had
	}
	n := vmNet{project: b.Project, name: LBPortVM(b.Name), host: b.Status.Host, listen: b.Spec.Listen,
		nics: []model.NIC{{Name: LBPortNIC, Network: b.Spec.Network, MAC: b.Status.MAC, IP: b.Status.VIP}}}
	vms[id] = n
	return !had || !old.same(n)
}

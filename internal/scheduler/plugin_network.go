package scheduler

import (
	"fmt"
	"strings"

	"github.com/vpool/vpool/internal/model"
)

// Network checks that a host can connect every NIC of the VM: a NIC on a
// vpool network (one with an address) needs a host that serves vpool
// networks (its agent has an overlay address or a VLAN uplink); a NIC on
// a host network needs a host that lists that network, when the host
// reports its networks at all. The migration pre-checks apply the same
// rule through the gate, so a VM is never placed or moved where its
// network is missing.
type Network struct{}

var _ Filter = (*Network)(nil)

const (
	reasonNoVpoolNet uint8 = iota
	reasonNoHostNet
)

// netRec is what a host offers NICs.
type netRec struct {
	vpool  bool            // serves vpool networks
	listed bool            // reports its host networks (names holds them)
	names  map[string]bool // host networks it has
}

func netRecOf(h *model.Host) netRec {
	r := netRec{vpool: h.Net != nil && (h.Net.Overlay != "" || h.Net.VLANUplink != "")}
	if h.Networks != nil {
		r.listed = true
		r.names = make(map[string]bool, len(h.Networks))
		for _, n := range h.Networks {
			r.names[n] = true
		}
	}
	return r
}

// Name implements Plugin.
func (Network) Name() string { return "network" }

// Filter implements Filter.
func (Network) Filter(c *Cycle, h int) Status {
	n := &c.snap.nets[h]
	if c.d.vpoolNet && !n.vpool {
		return reject(reasonNoVpoolNet, 0)
	}
	if n.listed {
		for _, name := range c.d.hostNets {
			if !n.names[name] {
				return reject(reasonNoHostNet, 0)
			}
		}
	}
	return ok
}

// Explain implements Filter.
func (Network) Explain(c *Cycle, reason uint8, _ int64) string {
	if reason == reasonNoVpoolNet {
		return "serves no vpool networks (its agent has no --overlay-address or --vlan-uplink)"
	}
	return fmt.Sprintf("lacks host network %s", strings.Join(c.d.hostNets, " or "))
}

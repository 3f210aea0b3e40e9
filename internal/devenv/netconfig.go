package devenv

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/haproxy"
	"github.com/vpool/vpool/internal/netvirt"
)

// NetOptions are an agent's virtual-network flags.
type NetOptions struct {
	Overlay     string // VXLAN source address of this host
	UnderlayMTU int
	VLANUplink  string
	DHCPDir     string // dnsmasq's files (searchable by nobody); default /run/vpool/dhcp
}

// NetConfig builds an agent's network side from its flags: nil when the
// host serves no vpool network (no overlay address and no VLAN uplink).
// It needs ip, bridge, tc and nft (Debian iproute2, nftables); DHCP
// needs dnsmasq (Debian dnsmasq-base) and is left out, with a warning,
// where it is missing.
func NetConfig(o NetOptions, log *slog.Logger) (*agent.NetConfig, func(), error) {
	if o.Overlay == "" && o.VLANUplink == "" {
		return nil, func() {}, nil
	}
	if o.Overlay != "" {
		if a, err := netip.ParseAddr(o.Overlay); err != nil || !a.Is4() {
			return nil, nil, fmt.Errorf("devenv: --overlay-address %q is not an IPv4 address", o.Overlay)
		}
	}
	for _, tool := range []string{"ip", "bridge", "tc", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, nil, fmt.Errorf("devenv: virtual networks need %s (Debian iproute2, nftables): %w", tool, err)
		}
	}
	if o.DHCPDir == "" {
		o.DHCPDir = "/run/vpool/dhcp"
	}
	var dhcp netvirt.DHCPServer
	closeFn := func() {}
	if bin, err := netvirt.LookDnsmasq(); err == nil {
		d := &netvirt.Dnsmasq{Dir: o.DHCPDir, Binary: bin, Log: log.With("component", "dnsmasq")}
		dhcp, closeFn = d, d.Close
	} else {
		log.Warn("no DHCP for guests on this host", "err", err)
	}
	nc := &agent.NetConfig{Overlay: o.Overlay, UnderlayMTU: o.UnderlayMTU, VLANUplink: o.VLANUplink,
		Manager: netvirt.NewManager(netvirt.Exec{}, dhcp, log)}
	// Load balancers: HAProxy (Debian haproxy), one per balancer placed
	// here. Closing the runner leaves HAProxy running with its
	// connections; the next agent's runner adopts it.
	if bin, err := exec.LookPath("haproxy"); err == nil {
		r := &haproxy.Runner{Sys: netvirt.Exec{}, Bin: bin, Log: log.With("component", "haproxy")}
		nc.Balancers = r
		prev := closeFn
		closeFn = func() { r.Close(); prev() }
	} else {
		log.Warn("no load balancers on this host: haproxy is missing (Debian haproxy)", "err", err)
	}
	return nc, closeFn, nil
}

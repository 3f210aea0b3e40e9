package qemu

import (
	"fmt"
	"strings"

	"github.com/vpool/vpool/internal/hypervisor"
)

// networkConfig is the NoCloud network-config (version 2) of the VM's
// NICs on vpool networks, each matched by its MAC: DHCP where the
// network serves it (the reservation gives the same address), else the
// static address and gateway; the network's MTU either way. nil when no
// NIC is on a vpool network.
func networkConfig(cfg hypervisor.VMConfig) []byte {
	var b strings.Builder
	n := 0
	for i, nic := range cfg.Spec.NICs {
		if i >= len(cfg.Ports) || cfg.Ports[i].Bridge == "" || nic.MAC == "" {
			continue
		}
		p := cfg.Ports[i]
		if n == 0 {
			b.WriteString("version: 2\nethernets:\n")
		}
		n++
		fmt.Fprintf(&b, "  %s:\n    match:\n      macaddress: %q\n    set-name: %s\n", nic.Name, strings.ToLower(nic.MAC), nic.Name)
		if p.MTU > 0 {
			fmt.Fprintf(&b, "    mtu: %d\n", p.MTU)
		}
		switch {
		case p.DHCP:
			b.WriteString("    dhcp4: true\n")
		case p.Address != "":
			fmt.Fprintf(&b, "    addresses: [%q]\n", p.Address)
			if p.Gateway != "" {
				fmt.Fprintf(&b, "    routes:\n      - to: 0.0.0.0/0\n        via: %q\n", p.Gateway)
			}
		}
	}
	if n == 0 {
		return nil
	}
	return []byte(b.String())
}

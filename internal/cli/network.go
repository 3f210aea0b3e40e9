package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// addNetworkCommands adds `network`, `secgroup` and, under `vm`, `nic`.
func (a *app) addNetworkCommands(root *cobra.Command) {
	root.AddCommand(a.networkCmd(), a.secgroupCmd())
	for _, c := range root.Commands() {
		if c.Name() == "vm" {
			c.AddCommand(group("nic", "Add, change and remove NICs of a VM (hot-plugged when it runs)",
				a.nicAddCmd(), a.nicSetCmd(), a.nicRemoveCmd()))
		}
	}
}

func (a *app) networkCmd() *cobra.Command {
	return group("network", "Create, list, show and delete virtual networks and see their addresses",
		a.networkCreateCmd(), a.networkListCmd(), a.networkShowCmd(), a.networkDeleteCmd(), a.networkAddressesCmd())
}

func (a *app) networkCreateCmd() *cobra.Command {
	var subnet, gateway, dhcp, desc string
	var vxlan bool
	var vlan, mtu int
	cmd := &cobra.Command{
		Use:   "create NAME --subnet CIDR",
		Short: "Create a virtual network (VXLAN overlay by default, or a VLAN)",
		Example: `  vpool network create lan --subnet 10.1.0.0/24
  vpool network create jumbo --subnet 10.2.0.0/24 --mtu 8950 --dhcp off
  vpool network create dmz --subnet 10.3.0.0/24 --vlan 100`,
		Args: exactArgs(1, "one network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if subnet == "" {
				return usagef("network create: --subnet is required (e.g. --subnet 10.1.0.0/24)")
			}
			spec := model.NetworkSpec{Subnet: subnet, Gateway: gateway, MTU: mtu, Description: desc}
			switch {
			case vxlan && vlan != 0:
				return usagef("network create: --vxlan and --vlan exclude each other")
			case vlan != 0:
				spec.Mode, spec.VLAN = model.NetModeVLAN, vlan
			default:
				spec.Mode = model.NetModeVXLAN
			}
			switch dhcp {
			case "on", "off":
				on := dhcp == "on"
				spec.DHCP = &on
			default:
				return usagef("network create: --dhcp is on or off (got %q)", dhcp)
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			n, err := c.CreateNetwork(cmd.Context(), a.cfg.Project, api.NetworkCreateRequest{Name: args[0], Spec: spec})
			if err != nil {
				return err
			}
			return a.print(cmd, n, func(w io.Writer) { networkTable(w, []model.Network{*n}) })
		},
	}
	f := cmd.Flags()
	f.StringVar(&subnet, "subnet", "", "IPv4 subnet, e.g. 10.1.0.0/24")
	f.StringVar(&gateway, "gateway", "", "gateway and DHCP server address (default: the first host address)")
	f.BoolVar(&vxlan, "vxlan", false, "join the hosts over a VXLAN overlay (the default)")
	f.IntVar(&vlan, "vlan", 0, "join the hosts over this 802.1Q VLAN id instead")
	f.IntVar(&mtu, "mtu", 0, "guest MTU (default 1450 over VXLAN, 1500 on a VLAN; up to 9000)")
	f.StringVar(&dhcp, "dhcp", "on", "serve DHCP to the guests: on or off")
	f.StringVar(&desc, "description", "", "free text")
	return cmd
}

func networkTable(w io.Writer, ns []model.Network) {
	row(w, "NAME", "SUBNET", "GATEWAY", "MODE", "VNI/VLAN", "MTU", "DHCP")
	for _, n := range ns {
		id := strconv.Itoa(n.Status.VNI)
		if n.Spec.Mode == model.NetModeVLAN {
			id = "vlan " + strconv.Itoa(n.Spec.VLAN)
		}
		row(w, n.Name, n.Spec.Subnet, n.Spec.Gateway, n.Spec.Mode, id, n.Spec.MTU, map[bool]string{true: "on", false: "off"}[n.Spec.DHCPOn()])
	}
}

func (a *app) networkListCmd() *cobra.Command {
	return &cobra.Command{
		Use: "list", Short: "List networks", Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			ns, err := c.ListNetworks(cmd.Context(), a.cfg.Project)
			if err != nil {
				return err
			}
			return a.print(cmd, ns, func(w io.Writer) { networkTable(w, ns) })
		},
	}
}

func (a *app) networkShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "show NAME", Short: "Show a network", Args: exactArgs(1, "one network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			n, err := c.GetNetwork(cmd.Context(), a.cfg.Project, args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, n, func(w io.Writer) { networkTable(w, []model.Network{*n}) })
		},
	}
}

func (a *app) networkDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use: "delete NAME", Short: "Delete a network (refused while an address is in use, naming who uses it)", Args: exactArgs(1, "one network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteNetwork(cmd.Context(), a.cfg.Project, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(outw(cmd), "network %s deleted\n", args[0])
			return nil
		},
	}
}

func (a *app) networkAddressesCmd() *cobra.Command {
	return &cobra.Command{
		Use: "addresses NAME", Short: "List a network's allocated addresses and their owners", Args: exactArgs(1, "one network name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			as, err := c.ListAddresses(cmd.Context(), a.cfg.Project, args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, as, func(w io.Writer) {
				row(w, "ADDRESS", "OWNER", "MAC")
				for _, x := range as {
					row(w, x.IP, x.Owner, orDash(x.MAC))
				}
			})
		},
	}
}

// parseRate reads a rate: a number with kbit, Mbit or Gbit (any case),
// or a bare number of kbit/s.
func parseRate(flag, s string) (int64, error) {
	low := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"gbit", 1_000_000}, {"mbit", 1000}, {"kbit", 1}} {
		if strings.HasSuffix(low, u.suffix) {
			low, mult = strings.TrimSuffix(low, u.suffix), u.m
			break
		}
	}
	n, err := strconv.ParseInt(low, 10, 64)
	if err != nil || n < 0 || n > model.MaxRateKbps/mult {
		return 0, usagef("--%s: %q is not a rate: write e.g. 100Mbit, 1Gbit or 500kbit", flag, s)
	}
	return n * mult, nil
}

// parseNIC reads NETWORK[,name=N][,ip=A][,mac=M][,sg=G1+G2][,in=RATE][,out=RATE].
func parseNIC(s string) (model.NIC, error) {
	parts := strings.Split(s, ",")
	nic := model.NIC{Network: parts[0]}
	if nic.Network == "" {
		return nic, usagef("--nic: %q names no network: write NETWORK[,ip=A][,mac=M][,sg=G1+G2][,in=RATE][,out=RATE]", s)
	}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return nic, usagef("--nic: %q is not key=value", p)
		}
		switch k {
		case "name":
			nic.Name = v
		case "ip":
			nic.IP = v
		case "mac":
			nic.MAC = v
		case "sg":
			nic.SecurityGroups = strings.Split(v, "+")
		case "in", "out":
			r, err := parseRate("nic "+k, v)
			if err != nil {
				return nic, err
			}
			if nic.QoS == nil {
				nic.QoS = &model.NICQoS{}
			}
			if k == "in" {
				nic.QoS.IngressKbps = r
			} else {
				nic.QoS.EgressKbps = r
			}
		default:
			return nic, usagef("--nic: unknown key %q (use name, ip, mac, sg, in, out)", k)
		}
	}
	return nic, nil
}

func (a *app) nicTable(w io.Writer, vm *model.VM) {
	row(w, "NIC", "NETWORK", "ADDRESS", "MAC", "GROUPS", "IN", "OUT")
	rate := func(k int64) string {
		if k == 0 {
			return "-"
		}
		return strconv.FormatInt(k, 10) + "kbit"
	}
	for _, n := range vm.Spec.NICs {
		var q model.NICQoS
		if n.QoS != nil {
			q = *n.QoS
		}
		row(w, n.Name, orDash(n.Network), orDash(n.IP), orDash(n.MAC), orDash(strings.Join(n.SecurityGroups, ",")), rate(q.IngressKbps), rate(q.EgressKbps))
	}
}

func (a *app) nicAddCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "add VM NETWORK[,ip=A][,mac=M][,sg=G1+G2][,in=RATE][,out=RATE]",
		Short:   "Add a NIC to a VM (hot-plugged when it runs)",
		Example: `  vpool vm nic add web1 lan,sg=web,in=100Mbit`,
		Args:    exactArgs(2, "a VM name and a NIC"),
		RunE: func(cmd *cobra.Command, args []string) error {
			nic, err := parseNIC(args[1])
			if err != nil {
				return err
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			vm, err := c.AddNIC(cmd.Context(), a.cfg.Project, args[0], nic)
			if err != nil {
				return err
			}
			return a.print(cmd, vm, func(w io.Writer) { a.nicTable(w, vm) })
		},
	}
}

func (a *app) nicSetCmd() *cobra.Command {
	var groups, in, out string
	cmd := &cobra.Command{
		Use:     "set VM NIC [--sg G1,G2] [--in RATE] [--out RATE]",
		Short:   "Change a NIC's security groups or rate limits, live (0 removes a limit)",
		Example: `  vpool vm nic set web1 nic0 --sg web,ssh --in 100Mbit --out 0`,
		Args:    exactArgs(2, "a VM name and a NIC name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.NICPatchRequest
			f := cmd.Flags()
			if f.Changed("sg") {
				gs := []string{}
				if groups != "" {
					gs = strings.Split(groups, ",")
				}
				req.SecurityGroups = &gs
			}
			if f.Changed("in") || f.Changed("out") {
				c, err := a.client()
				if err != nil {
					return err
				}
				vm, err := c.GetVM(cmd.Context(), a.cfg.Project, args[0])
				if err != nil {
					return err
				}
				q := model.NICQoS{}
				for _, n := range vm.Spec.NICs {
					if n.Name == args[1] && n.QoS != nil {
						q = *n.QoS
					}
				}
				if f.Changed("in") {
					if q.IngressKbps, err = parseRate("in", in); err != nil {
						return err
					}
				}
				if f.Changed("out") {
					if q.EgressKbps, err = parseRate("out", out); err != nil {
						return err
					}
				}
				req.QoS = &q
			}
			if req.SecurityGroups == nil && req.QoS == nil {
				return usagef("vm nic set: give --sg, --in or --out")
			}
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			vm, err := c.PatchNIC(cmd.Context(), a.cfg.Project, args[0], args[1], req)
			if err != nil {
				return err
			}
			return a.print(cmd, vm, func(w io.Writer) { a.nicTable(w, vm) })
		},
	}
	cmd.Flags().StringVar(&groups, "sg", "", "security groups, comma separated (empty: none)")
	cmd.Flags().StringVar(&in, "in", "", "limit of what the guest receives (e.g. 100Mbit; 0: none)")
	cmd.Flags().StringVar(&out, "out", "", "limit of what the guest sends")
	return cmd
}

func (a *app) nicRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use: "remove VM NIC", Short: "Unplug a NIC and release its address", Args: exactArgs(2, "a VM name and a NIC name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			vm, err := c.RemoveNIC(cmd.Context(), a.cfg.Project, args[0], args[1])
			if err != nil {
				return err
			}
			return a.print(cmd, vm, func(w io.Writer) { a.nicTable(w, vm) })
		},
	}
}

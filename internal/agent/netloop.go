package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/netvirt"
)

// NetApplier applies a host's network plan (*netvirt.Manager, or a fake).
type NetApplier interface {
	Apply(ctx context.Context, plan netvirt.HostPlan) error
}

// NetConfig makes the agent serve vpool networks on its host.
type NetConfig struct {
	// Overlay is this host's VXLAN source address, reachable from the
	// other hosts (empty: no VXLAN networks here); UnderlayMTU the MTU
	// of its path (default 1500); VLANUplink the device that carries
	// VLAN networks (empty: none).
	Overlay     string
	UnderlayMTU int
	VLANUplink  string
	// NetnsPrefix names the gateway namespaces (default "vpn-").
	NetnsPrefix string
	Manager     NetApplier
	// Balancers serves the load balancers placed on this host
	// (*haproxy.Runner; lbloop.go); nil: none.
	Balancers BalancerRunner
}

// netState is the agent's network side: the last view from the server
// and whether it is applied.
type netState struct {
	mu      sync.Mutex
	view    *api.HostNetworks
	applied string // etag of the view last applied without error
	kick    chan struct{}
}

func (a *Agent) netCaps() *model.HostNet {
	c := a.cfg.Net
	if c == nil {
		return nil
	}
	mtu := c.UnderlayMTU
	if mtu == 0 {
		mtu = model.DefaultMTU
	}
	return &model.HostNet{Overlay: c.Overlay, UnderlayMTU: mtu, VLANUplink: c.VLANUplink, Balancers: c.Balancers != nil}
}

// kickNet asks the network loop to apply the plan again (a VM started:
// its taps exist now and get their MTU and rate limits).
func (a *Agent) kickNet() {
	if a.cfg.Net == nil {
		return
	}
	select {
	case a.net.kick <- struct{}{}:
	default:
	}
}

// networksLoop long-polls the host's network view and applies it; it
// also re-applies on a kick and every StatusInterval (taps come and go
// with their VMs).
func (a *Agent) networksLoop(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	views := make(chan struct{}, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		etag, fails := "", 0
		for ctx.Err() == nil {
			var v api.HostNetworks
			path := fmt.Sprintf("%s/networks?wait=%s&etag=%s", api.AgentPrefix, a.cfg.PollWait, url.QueryEscape(etag))
			if err := a.client.do(ctx, http.MethodGet, path, nil, &v); err != nil {
				if ctx.Err() != nil {
					return
				}
				fails++
				a.log.Warn("network view", "err", err)
				sleepCtx(ctx, retryDelay(fails))
				continue
			}
			fails = 0
			etag = v.ETag
			a.net.mu.Lock()
			a.net.view = &v
			a.net.mu.Unlock()
			select {
			case views <- struct{}{}:
			default:
			}
		}
	}()
	t := time.NewTicker(a.cfg.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-views:
		case <-a.net.kick:
		case <-t.C:
		}
		if err := a.applyNetworks(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("applying the host's networks", "err", err)
		}
	}
}

// applyNetworks renders the last view into a plan and applies it.
func (a *Agent) applyNetworks(ctx context.Context) error {
	a.net.mu.Lock()
	v := a.net.view
	a.net.mu.Unlock()
	if v == nil {
		return nil
	}
	// A network this host cannot serve is left out (and said so); the
	// others are applied all the same.
	plan, planErr := a.buildPlan(v)
	if err := a.cfg.Net.Manager.Apply(ctx, plan); err != nil {
		return errors.Join(planErr, err)
	}
	if planErr != nil {
		return planErr
	}
	a.net.mu.Lock()
	first := a.net.applied == ""
	a.net.applied = v.ETag
	a.net.mu.Unlock()
	if first {
		a.wake() // VMs waiting for their bridges can start now
	}
	return nil
}

// buildPlan turns the server's view into netvirt's plan for this host.
func (a *Agent) buildPlan(v *api.HostNetworks) (netvirt.HostPlan, error) {
	c := a.cfg.Net
	plan := netvirt.HostPlan{Uplink: c.VLANUplink, NetnsPrefix: c.NetnsPrefix, Groups: map[string][]netip.Addr{}}
	if c.Overlay != "" {
		u, err := netip.ParseAddr(c.Overlay)
		if err != nil {
			return plan, fmt.Errorf("agent: overlay address %q: %w", c.Overlay, err)
		}
		plan.Underlay = u
	}
	groups := map[string]api.GroupView{}
	for _, g := range v.Groups {
		key := g.Project + "/" + g.Name
		groups[key] = g
		for _, m := range g.Members {
			if ip, err := netip.ParseAddr(m); err == nil {
				plan.Groups[key] = append(plan.Groups[key], ip)
			}
		}
	}
	byVNI := map[int]*netvirt.NetPlan{}
	var errs []error
	for _, n := range v.Networks {
		np := netvirt.NetPlan{VNI: n.VNI, Mode: n.Spec.Mode, VLAN: n.Spec.VLAN, MTU: n.Spec.MTU, DHCP: n.Spec.DHCPOn(), Subnet: n.Spec.Prefix()}
		np.Gateway, _ = netip.ParseAddr(n.Spec.Gateway)
		if ok, why := a.netCaps().Serves(&n.Spec); !ok {
			errs = append(errs, fmt.Errorf("agent: network %s/%s: this host %s", n.Project, n.Name, why))
			continue
		}
		for _, r := range n.Remotes {
			if ip, err := netip.ParseAddr(r); err == nil {
				np.Remotes = append(np.Remotes, ip)
			}
		}
		for _, e := range n.FDB {
			if ip, err := netip.ParseAddr(e.Host); err == nil {
				np.FDB = append(np.FDB, netvirt.FDBEntry{MAC: e.MAC, Dst: ip})
			}
		}
		plan.Networks = append(plan.Networks, np)
		byVNI[n.VNI] = &plan.Networks[len(plan.Networks)-1]
	}
	for _, nic := range v.NICs {
		np := byVNI[nic.VNI]
		ip, err := netip.ParseAddr(nic.IP)
		if np == nil || err != nil {
			continue
		}
		np.Leases = append(np.Leases, netvirt.Lease{MAC: nic.MAC, IP: ip, Name: nic.VM})
		pt := netvirt.Port{Tap: netvirt.TapName(a.cfg.HostName, nic.Project, nic.VM, nic.NIC), VNI: nic.VNI, MAC: nic.MAC, IP: ip,
			OpenEgress: len(nic.Groups) == 0, IngressKbps: nic.QoS.IngressKbps, EgressKbps: nic.QoS.EgressKbps}
		if nic.Listen > 0 {
			// A load balancer's virtual IP takes new connections to its port.
			pt.Ingress = append(pt.Ingress, netvirt.Rule{Protocol: model.ProtoTCP, PortMin: nic.Listen, PortMax: nic.Listen})
		}
		for _, gname := range nic.Groups {
			for _, r := range groups[nic.Project+"/"+gname].Rules {
				nr := netvirt.Rule{Protocol: r.Protocol, PortMin: r.PortMin, PortMax: r.PortMax}
				if r.CIDR != "" {
					nr.CIDR, _ = netip.ParsePrefix(r.CIDR)
				}
				if r.Group != "" {
					nr.Group = nic.Project + "/" + r.Group
				}
				if r.Direction == model.DirIngress {
					pt.Ingress = append(pt.Ingress, nr)
				} else {
					pt.Egress = append(pt.Egress, nr)
				}
			}
		}
		plan.Ports = append(plan.Ports, pt)
	}
	return plan, errors.Join(errs...)
}

// errNetNotReady: a NIC's network is not in the host's applied view yet.
var errNetNotReady = errors.New("agent: the NIC's network is not set up on this host yet")

// nicPorts gives the driver the host side of vm's NICs on vpool
// networks (a NIC with an address is on one). A VM whose network this
// host has not applied yet waits (the converge retries).
func (a *Agent) nicPorts(vm *model.VM) ([]hypervisor.NICPort, error) {
	var ports []hypervisor.NICPort
	managed := false
	for _, n := range vm.Spec.NICs {
		if n.IP != "" {
			managed = true
		}
	}
	if !managed {
		return nil, nil
	}
	if a.cfg.Net == nil {
		return nil, fmt.Errorf("agent: VM %s has NICs on vpool networks but this host serves none (vpool agent --overlay-address)", vm.Key())
	}
	// The view that names this VM's NICs follows its assignment within
	// about a second (a migration target's too): wait for it a little.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ports = ports[:0]
		a.net.mu.Lock()
		v, applied := a.net.view, a.net.applied
		a.net.mu.Unlock()
		err := errNetNotReady
		if v != nil && applied != "" {
			err = nil
			for _, n := range vm.Spec.NICs {
				p, perr := a.nicPort(v, vm, n)
				if perr != nil {
					err = perr
					break
				}
				ports = append(ports, p)
			}
		}
		if err == nil || time.Now().After(deadline) {
			return ports, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (a *Agent) nicPort(v *api.HostNetworks, vm *model.VM, n model.NIC) (hypervisor.NICPort, error) {
	if n.IP == "" {
		return hypervisor.NICPort{}, nil // a host network
	}
	for _, nv := range v.NICs {
		if nv.Project == vm.Project && nv.VM == vm.Name && nv.NIC == n.Name {
			for _, net := range v.Networks {
				if net.VNI == nv.VNI {
					return hypervisor.NICPort{Tap: netvirt.TapName(a.cfg.HostName, vm.Project, vm.Name, n.Name),
						Bridge: netvirt.BridgeName(nv.VNI), MTU: net.Spec.MTU,
						Address: fmt.Sprintf("%s/%d", n.IP, net.Spec.Prefix().Bits()), Gateway: net.Spec.Gateway, DHCP: net.Spec.DHCPOn()}, nil
				}
			}
		}
	}
	return hypervisor.NICPort{}, fmt.Errorf("%w (NIC %s of %s)", errNetNotReady, n.Name, vm.Key())
}

// applyNICs plugs NICs the spec has and the driver does not, and unplugs
// the ones it lost; a driver that cannot do it live says so in the
// VM's message (the change waits for a restart).
func (a *Agent) applyNICs(ctx context.Context, vm *model.VM, in *hypervisor.Info) (string, error) {
	hp, ok := a.cfg.Driver.(hypervisor.NICHotplugger)
	if !ok {
		return "", nil
	}
	// A NIC the driver recorded without a name (made before NICs had
	// names) is the spec's NIC of the same index.
	named := func(i int, n model.NIC) string {
		if n.Name == "" && i < len(vm.Spec.NICs) {
			return vm.Spec.NICs[i].Name
		}
		return n.Name
	}
	have := map[string]bool{}
	for i, n := range in.Config.Spec.NICs {
		have[named(i, n)] = true
	}
	want := map[string]bool{}
	msg := ""
	for _, n := range vm.Spec.NICs {
		want[n.Name] = true
		if have[n.Name] || n.Name == "" {
			continue
		}
		var port hypervisor.NICPort
		if n.IP != "" {
			a.net.mu.Lock()
			v := a.net.view
			a.net.mu.Unlock()
			if v == nil {
				return "", errNetNotReady
			}
			p, err := a.nicPort(v, vm, n)
			if err != nil {
				return "", err
			}
			port = p
		}
		err := hp.AttachNIC(ctx, in.ID, n, port)
		switch {
		case errors.Is(err, hypervisor.ErrNeedsRestart):
			msg = fmt.Sprintf("NIC %s is added at the next restart: %v", n.Name, err)
		case err != nil && !errors.Is(err, hypervisor.ErrExists):
			return "", fmt.Errorf("attach NIC %s: %w", n.Name, err)
		default:
			a.log.Info("NIC attached", "vm", vm.Key(), "nic", n.Name)
			a.kickNet()
		}
	}
	for i, n := range in.Config.Spec.NICs {
		if want[named(i, n)] || n.Name == "" {
			continue
		}
		err := hp.DetachNIC(ctx, in.ID, n.Name)
		switch {
		case errors.Is(err, hypervisor.ErrNeedsRestart):
			msg = fmt.Sprintf("NIC %s is removed at the next restart: %v", n.Name, err)
		case err != nil && !errors.Is(err, hypervisor.ErrNotFound):
			return "", fmt.Errorf("detach NIC %s: %w", n.Name, err)
		default:
			a.log.Info("NIC detached", "vm", vm.Key(), "nic", n.Name)
		}
	}
	return msg, nil
}

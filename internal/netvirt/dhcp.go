package netvirt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DHCPConfig is one network's DHCP service on this host: reservations
// only (a guest gets the address vpool allocated to its MAC, nothing
// else), the gateway as router and the network's MTU (option 26).
type DHCPConfig struct {
	VNI     int
	Netns   string // where it runs
	Subnet  netip.Prefix
	Gateway netip.Addr
	MTU     int
	Leases  []Lease
}

func dhcpConfig(n NetPlan, netns string) DHCPConfig {
	return DHCPConfig{VNI: n.VNI, Netns: netns, Subnet: n.Subnet, Gateway: n.Gateway, MTU: n.MTU, Leases: n.Leases}
}

// LeaseTime is how long a DHCP lease lasts.
const LeaseTime = "1h"

// RenderDnsmasqConf renders dnsmasq's configuration for one network;
// dir holds its hosts file and pid file.
func RenderDnsmasqConf(c DHCPConfig, dir string) string {
	base := filepath.Join(dir, strconv.Itoa(c.VNI))
	mask := netip.MustParseAddr("255.255.255.255")
	if b := c.Subnet.Bits(); b < 32 {
		v := ^uint32(0) << (32 - b)
		mask = netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	lines := []string{
		fmt.Sprintf("# vpool network %d: DHCP reservations only", c.VNI),
		"interface=gw",
		"bind-interfaces",
		"port=0", // no DNS
		"no-resolv",
		"no-hosts",
		"dhcp-authoritative",
		"leasefile-ro",
		"user=nobody",
		fmt.Sprintf("dhcp-range=%s,static,%s,%s", c.Subnet.Addr(), mask, LeaseTime),
		fmt.Sprintf("dhcp-option=option:router,%s", c.Gateway),
		fmt.Sprintf("dhcp-option-force=option:mtu,%d", c.MTU), // sent even when not asked for (udhcpc does not ask)
		"dhcp-hostsfile=" + base + ".hosts",
		"pid-file=" + base + ".pid",
	}
	return strings.Join(lines, "\n") + "\n"
}

// RenderDHCPHosts renders the reservations (dhcp-hostsfile lines).
func RenderDHCPHosts(leases []Lease) string {
	ls := append([]Lease(nil), leases...)
	sort.Slice(ls, func(i, j int) bool { return ls[i].MAC < ls[j].MAC })
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "%s,%s\n", strings.ToLower(l.MAC), l.IP)
	}
	return b.String()
}

// Dnsmasq runs one dnsmasq per network inside the network's namespace
// (`ip netns exec vpn-N dnsmasq -k`; Dir must be per host when several
// "hosts" share a machine), restarts it when it dies, and
// reloads it (SIGHUP re-reads the hosts file) when reservations change.
type Dnsmasq struct {
	// Dir holds the configuration, hosts and pid files; dnsmasq drops
	// to nobody, so Dir must be searchable by others (0755).
	Dir    string
	Binary string // default "dnsmasq"
	Log    *slog.Logger

	mu    sync.Mutex
	procs map[int]*dnsmasqProc
}

type dnsmasqProc struct {
	conf, hosts string
	cancel      context.CancelFunc
	done        chan struct{}
	mu          sync.Mutex
	pid         int
}

// Ensure implements DHCPServer.
func (d *Dnsmasq) Ensure(ctx context.Context, c DHCPConfig) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.procs == nil {
		d.procs = map[int]*dnsmasqProc{}
	}
	if err := os.MkdirAll(d.Dir, 0o755); err != nil {
		return fmt.Errorf("netvirt: dhcp dir: %w", err)
	}
	if err := searchable(d.Dir); err != nil {
		return err
	}
	conf, hosts := RenderDnsmasqConf(c, d.Dir), RenderDHCPHosts(c.Leases)
	base := filepath.Join(d.Dir, strconv.Itoa(c.VNI))
	p := d.procs[c.VNI]
	if p != nil && p.conf == conf && p.hosts == hosts {
		return nil
	}
	if err := writeFile(base+".hosts", hosts); err != nil {
		return err
	}
	if p != nil && p.conf == conf {
		p.hosts = hosts
		p.signal(syscall.SIGHUP)
		return nil
	}
	if p != nil {
		d.stopLocked(c.VNI)
	}
	if err := writeFile(base+".conf", conf); err != nil {
		return err
	}
	killStale(base + ".pid")
	pctx, cancel := context.WithCancel(context.Background())
	p = &dnsmasqProc{conf: conf, hosts: hosts, cancel: cancel, done: make(chan struct{})}
	d.procs[c.VNI] = p
	go d.supervise(pctx, c.VNI, c.Netns, base+".conf", p)
	return nil
}

// searchable checks that dnsmasq, once it dropped to nobody, can reach
// dir (it re-reads the hosts file there on SIGHUP).
func searchable(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("netvirt: dhcp dir: %w", err)
	}
	for p := abs; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("netvirt: dhcp dir: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("netvirt: dhcp dir %s: %s is not searchable by others, and dnsmasq runs as nobody", dir, p)
		}
		if p == "/" {
			return nil
		}
	}
}

func writeFile(path, s string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		return fmt.Errorf("netvirt: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("netvirt: %w", err)
	}
	return nil
}

// killStale ends a dnsmasq left by an earlier agent process.
func killStale(pidFile string) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "dnsmasq" {
		syscall.Kill(pid, syscall.SIGTERM)
	}
}

func (p *dnsmasqProc) signal(s syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pid > 0 {
		syscall.Kill(p.pid, s)
	}
}

func (d *Dnsmasq) supervise(ctx context.Context, vni int, netns, conf string, p *dnsmasqProc) {
	defer close(p.done)
	bin := d.Binary
	if bin == "" {
		bin = "dnsmasq"
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	delay := time.Second
	for ctx.Err() == nil {
		cmd := exec.Command("ip", "netns", "exec", netns, bin, "-k", "-C", conf)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Start()
		if err == nil {
			p.mu.Lock()
			p.pid = cmd.Process.Pid
			p.mu.Unlock()
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case <-ctx.Done():
				cmd.Process.Signal(syscall.SIGTERM)
				<-exited
				return
			case err = <-exited:
			}
			p.mu.Lock()
			p.pid = 0
			p.mu.Unlock()
		}
		log.Warn("netvirt: dnsmasq exited; restarting", "vni", vni, "err", err, "stderr", strings.TrimSpace(stderr.String()), "in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// Stop implements DHCPServer.
func (d *Dnsmasq) Stop(vni int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopLocked(vni)
}

func (d *Dnsmasq) stopLocked(vni int) {
	p := d.procs[vni]
	if p == nil {
		return
	}
	p.cancel()
	<-p.done
	delete(d.procs, vni)
}

// Running implements DHCPServer.
func (d *Dnsmasq) Running() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]int, 0, len(d.procs))
	for vni := range d.procs {
		out = append(out, vni)
	}
	sort.Ints(out)
	return out
}

// Close stops every server.
func (d *Dnsmasq) Close() {
	for _, vni := range d.Running() {
		d.Stop(vni)
	}
}

// Pid returns the pid of a network's dnsmasq (0 when not running).
func (d *Dnsmasq) Pid(vni int) int {
	d.mu.Lock()
	p := d.procs[vni]
	d.mu.Unlock()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

var _ DHCPServer = (*Dnsmasq)(nil)

// errNoDnsmasq is returned by LookDnsmasq.
var errNoDnsmasq = errors.New("netvirt: dnsmasq not installed (Debian: dnsmasq-base)")

// LookDnsmasq finds the dnsmasq binary.
func LookDnsmasq() (string, error) {
	p, err := exec.LookPath("dnsmasq")
	if err != nil {
		for _, c := range []string{"/usr/sbin/dnsmasq", "/sbin/dnsmasq"} {
			if _, err := os.Stat(c); err == nil {
				return c, nil
			}
		}
		return "", errNoDnsmasq
	}
	return p, nil
}

package qemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/netvirt"
	"github.com/vpool/vpool/internal/testenv"
)

const netnsChildEnv = "VPOOL_TEST_NETNS_CHILD"

// inOwnNetns runs the calling test again in a network namespace of its
// own (the test binary under `ip netns exec`), so that its bridges,
// rules and guests never touch the machine's network; it reports
// whether the caller is that child and should go on.
func inOwnNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsChildEnv) != "" {
		return true
	}
	guest.Require(t) // built here: the namespace has no network to download with
	testenv.MustHaveRoot(t, "network namespaces, bridges and nftables")
	testenv.MustHaveTool(t, "ip", "Debian iproute2")
	testenv.MustHaveTool(t, "nft", "Debian nftables")
	var b [3]byte
	rand.Read(b[:])
	ns := "vpq" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	// 15m: the child waits for a guest slot behind the package's other
	// QEMU tests, then boots two guests; 5m ran out once in CI at load 17
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.timeout", "15m")
	cmd.Env = append(os.Environ(), netnsChildEnv+"="+ns)
	out, err := cmd.CombinedOutput()
	t.Logf("in namespace %s:\n%s", ns, out)
	if err != nil {
		t.Fatalf("the test failed in its namespace: %v", err)
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Skip("skipped in its namespace")
	}
	return false
}

// console types commands into a guest's serial shell and waits for
// their markers in its log.
type console struct {
	t   *testing.T
	d   *Driver
	id  string
	rw  io.ReadWriteCloser
	seq int
}

func openConsole(t *testing.T, d *Driver, id string) *console {
	rw, err := d.OpenConsole(context.Background(), id)
	if err != nil {
		t.Fatalf("console of %s: %v", id, err)
	}
	t.Cleanup(func() { rw.Close() })
	go io.Copy(io.Discard, rw)
	return &console{t: t, d: d, id: id, rw: rw}
}

// run types cmd, which must print ok or fail markers, and reports which.
func (c *console) check(cmd string) bool {
	c.t.Helper()
	c.seq++
	mark := fmt.Sprintf("R%d-%s", c.seq, strings.ReplaceAll(c.id, ".", "-"))
	// The shell echoes what is typed: the marker is put together by the
	// shell, so only its answer carries it whole.
	fmt.Fprintf(c.rw, "m=%s; if %s; then echo \"$m\"-OK; else echo \"$m\"-NO; fi\n", mark, cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		if len(guest.Lines(c.d.SerialLog(c.id), mark+"-OK")) > 0 {
			return true
		}
		if len(guest.Lines(c.d.SerialLog(c.id), mark+"-NO")) > 0 {
			return false
		}
		select {
		case <-ctx.Done():
			b, _ := os.ReadFile(c.d.SerialLog(c.id))
			c.t.Fatalf("no answer to %q from %s; log tail:\n%s", cmd, c.id, tail(string(b), 1500))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *console) send(cmd string) { fmt.Fprintf(c.rw, "%s\n", cmd) }

// TestGuestsOnAVpoolNetwork boots two real guests on a vpool network
// (its bridge, rules and dnsmasq made by netvirt, the taps by the
// driver with the names the rules use): both get their reserved address
// by DHCP, an allowed port is reachable, a port without a rule and a
// NIC with no ingress rule are not, and a spoofed source is dropped.
func TestGuestsOnAVpoolNetwork(t *testing.T) {
	if !inOwnNetns(t) {
		return
	}
	g := heavy(t) // one slot for both guests, as the migration tests do (two slots could deadlock)
	if _, err := netvirt.LookDnsmasq(); err != nil {
		testenv.SkipOrFail(t, "%v", err)
	}
	exec.Command("ip", "link", "set", "lo", "up").Run()
	ns := os.Getenv(netnsChildEnv)
	dhcpDir := filepath.Join("/run", ns+"-dhcp")
	defer os.RemoveAll(dhcpDir)
	dns := &netvirt.Dnsmasq{Dir: dhcpDir}
	defer dns.Close()
	mgr := netvirt.NewManager(netvirt.Exec{}, dns, testLogger(t))
	const vni = 77
	a := netip.MustParseAddr
	type vmDef struct {
		name, mac, ip string
		ingress       []netvirt.Rule
	}
	vms := []vmDef{
		{"a", "0a:00:00:00:77:0a", "10.77.0.10", []netvirt.Rule{{Protocol: "tcp", PortMin: 8080, PortMax: 8080}}},
		{"b", "0a:00:00:00:77:0b", "10.77.0.11", nil},
	}
	plan := netvirt.HostPlan{Underlay: a("192.0.2.1"), NetnsPrefix: ns + "g-", Networks: []netvirt.NetPlan{{
		VNI: vni, Mode: "vxlan", MTU: 1450, Subnet: netip.MustParsePrefix("10.77.0.0/24"), Gateway: a("10.77.0.1"), DHCP: true}}}
	for _, v := range vms {
		plan.Networks[0].Leases = append(plan.Networks[0].Leases, netvirt.Lease{MAC: v.mac, IP: a(v.ip)})
		plan.Ports = append(plan.Ports, netvirt.Port{Tap: netvirt.TapName("h", "test", v.name, "nic0"), VNI: vni, MAC: v.mac, IP: a(v.ip),
			Ingress: v.ingress, OpenEgress: true})
	}
	ctx := context.Background()
	mustDo(t, "Apply", mgr.Apply(ctx, plan))
	defer func() {
		if t.Failed() {
			out, _ := exec.Command("sh", "-c", "nft list ruleset; ip -br link; sysctl net.bridge.bridge-nf-call-iptables").CombinedOutput()
			t.Logf("host state:\n%s", out)
		}
	}()

	cfg := testConfig(t, "")
	cfg.Network = NetBridge
	d := newDriver(t, cfg)
	cons := map[string]*console{}
	for _, v := range vms {
		c := vmConfig(g, v.name, "vpool.net=dhcp")
		c.Spec.NICs = []model.NIC{{Name: "nic0", Network: "lan", MAC: v.mac, IP: v.ip}}
		c.Ports = []hypervisor.NICPort{{Tap: netvirt.TapName("h", "test", v.name, "nic0"), Bridge: netvirt.BridgeName(vni), MTU: 1450}}
		mustDo(t, "Create "+v.name, d.Create(ctx, c))
		mustDo(t, "Start "+v.name, d.Start(ctx, c.ID))
	}
	mustDo(t, "Apply after start", mgr.Apply(ctx, plan))
	for _, v := range vms {
		id := "test." + v.name
		wctx, cancel := context.WithTimeout(ctx, 120*time.Second)
		line, err := guest.WaitFor(wctx, d.SerialLog(id), "VPOOL-GUEST-NET eth0 "+v.ip)
		cancel()
		if err != nil {
			b, _ := os.ReadFile(d.SerialLog(id))
			t.Fatalf("%s got no DHCP lease of %s: %v\n%s", v.name, v.ip, err, tail(string(b), 1500))
		}
		t.Logf("%s: %s", v.name, strings.TrimSpace(line))
		cons[v.name] = openConsole(t, d, id)
	}
	ca, cb := cons["a"], cons["b"]
	for _, c := range []*console{ca, cb} {
		c.send("for p in 8080 8081; do (while :; do echo hello-$p | nc -l -p $p; done) & done")
	}
	time.Sleep(time.Second)
	cases := []struct {
		name string
		c    *console
		cmd  string
		want bool
	}{
		{"b reaches a's allowed port", cb, "echo x | nc -w 3 10.77.0.10 8080 | grep -q hello-8080", true},
		{"b cannot reach a's port without a rule", cb, "echo x | nc -w 3 10.77.0.10 8081 | grep -q hello-8081", false},
		{"a cannot reach b (no ingress rule)", ca, "echo x | nc -w 3 10.77.0.11 8080 | grep -q hello-8080", false},
		{"b pings the gateway", cb, "ping -c 1 -W 3 10.77.0.1 >/dev/null", true},
		// The test guest's own DHCP script ignores the MTU option; a
		// second udhcpc with a script that prints it shows what the
		// server offers (distributions apply it).
		{"DHCP offers the network's MTU", cb, `printf '#!/bin/sh\necho "DHCP-$1-mtu=$mtu"\n' >/tmp/m && chmod +x /tmp/m && udhcpc -i eth0 -q -n -t 3 -T 1 -s /tmp/m 2>/dev/null | grep -q 'DHCP-bound-mtu=1450'`, true},
	}
	for _, tc := range cases {
		if got := tc.c.check(tc.cmd); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	// A spoofed source address: b takes a second address and uses it.
	cb.send("ip addr add 10.77.0.99/24 dev eth0")
	if cb.check("echo x | nc -w 3 -s 10.77.0.99 10.77.0.10 8080 | grep -q hello-8080") {
		t.Error("a connection from a spoofed address got through")
	}
	if !cb.check("echo x | nc -w 3 10.77.0.10 8080 | grep -q hello-8080") {
		t.Error("after the spoof attempt b no longer reaches a")
	}

	// Hot-plug a second NIC into the running guest a, and unplug it.
	tap2 := netvirt.TapName("h", "test", "a", "nic1")
	plan.Ports = append(plan.Ports, netvirt.Port{Tap: tap2, VNI: vni, MAC: "0a:00:00:00:77:1a", IP: a("10.77.0.12"), OpenEgress: true})
	mustDo(t, "Apply with nic1", mgr.Apply(ctx, plan))
	mustDo(t, "AttachNIC", d.AttachNIC(ctx, "test.a", model.NIC{Name: "nic1", Network: "lan", MAC: "0a:00:00:00:77:1a", IP: "10.77.0.12"},
		hypervisor.NICPort{Tap: tap2, Bridge: netvirt.BridgeName(vni), MTU: 1450}))
	if !ca.check("for i in 1 2 3 4 5 6 7 8 9 10; do ip link show | grep -q 0a:00:00:00:77:1a && break; sleep 1; done; ip link show | grep -q 0a:00:00:00:77:1a") {
		t.Error("the guest does not see the hot-plugged NIC")
	}
	if out, err := exec.Command("ip", "-br", "link", "show", "master", netvirt.BridgeName(vni)).CombinedOutput(); err != nil || !strings.Contains(string(out), tap2) {
		t.Errorf("the hot-plugged NIC's tap is not on the bridge: %s %v", out, err)
	}
	mustDo(t, "DetachNIC", d.DetachNIC(ctx, "test.a", "nic1"))
	if ca.check("ip link show | grep -q 0a:00:00:00:77:1a") {
		t.Error("the guest still sees the unplugged NIC")
	}
}

package netvirt

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/testenv"
)

// testbed builds "hosts" and "VMs" out of network namespaces: hosts are
// joined by a veth underlay (192.0.2.0/24, in the namespaces only); a
// VM is a namespace whose eth0 is a veth whose other end (the "tap")
// lives in its host.
type testbed struct {
	t      testing.TB
	prefix string
	hosts  map[string]*tbHost
	vms    map[string]*tbVM
}

type tbHost struct {
	name, ns string
	underlay netip.Addr
	mgr      *Manager
	dhcp     *Dnsmasq
}

type tbVM struct {
	name, ns, host, tap, mac string
	ip                       netip.Addr
}

func newTestbed(t testing.TB) *testbed {
	testenv.MustHaveRoot(t, "network namespaces")
	testenv.MustHaveTool(t, "ip", "Debian iproute2")
	testenv.MustHaveTool(t, "nft", "Debian nftables")
	testenv.MustHaveTool(t, "tc", "Debian iproute2")
	var b [3]byte
	rand.Read(b[:])
	tb := &testbed{t: t, prefix: "vt" + hex.EncodeToString(b[:]), hosts: map[string]*tbHost{}, vms: map[string]*tbVM{}}
	t.Cleanup(tb.close)
	return tb
}

func sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (tb *testbed) close() {
	for _, h := range tb.hosts {
		if h.dhcp != nil {
			h.dhcp.Close()
		}
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], tb.prefix) {
			exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
}

// addHosts makes n hosts on one underlay (a bridge in its own namespace).
func (tb *testbed) addHosts(mtu int, names ...string) {
	ul := tb.prefix + "-ul"
	sh(tb.t, "ip", "netns", "add", ul)
	sh(tb.t, "ip", "-n", ul, "link", "add", "ul", "mtu", fmt.Sprint(mtu), "type", "bridge")
	sh(tb.t, "ip", "-n", ul, "link", "set", "ul", "up")
	for i, name := range names {
		h := &tbHost{name: name, ns: tb.prefix + "-" + name, underlay: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})}
		sh(tb.t, "ip", "netns", "add", h.ns)
		sh(tb.t, "ip", "-n", ul, "link", "add", "p"+name, "mtu", fmt.Sprint(mtu), "type", "veth", "peer", "name", "eth0", "netns", h.ns)
		sh(tb.t, "ip", "-n", ul, "link", "set", "p"+name, "master", "ul", "up")
		sh(tb.t, "ip", "-n", h.ns, "addr", "add", h.underlay.String()+"/24", "dev", "eth0")
		sh(tb.t, "ip", "-n", h.ns, "link", "set", "eth0", "up")
		sh(tb.t, "ip", "-n", h.ns, "link", "set", "lo", "up")
		var dhcp DHCPServer
		if bin, err := LookDnsmasq(); err == nil {
			dir := filepath.Join("/run", tb.prefix+"-dhcp-"+name) // dnsmasq runs as nobody: no 0700 parents
			tb.t.Cleanup(func() { os.RemoveAll(dir) })
			h.dhcp = &Dnsmasq{Dir: dir, Binary: bin, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
			dhcp = h.dhcp
		}
		h.mgr = NewManager(Exec{Netns: h.ns}, dhcp, nil)
		tb.hosts[name] = h
	}
}

// addVM makes a VM namespace on host with its NIC's MAC and address (an
// address of "" leaves eth0 without one, for DHCP).
func (tb *testbed) addVM(name, host, mac, addr string, bits int) *tbVM {
	h := tb.hosts[host]
	v := &tbVM{name: name, ns: tb.prefix + "-" + name, host: host, tap: "tap" + name, mac: mac}
	sh(tb.t, "ip", "netns", "add", v.ns)
	sh(tb.t, "ip", "-n", h.ns, "link", "add", v.tap, "type", "veth", "peer", "name", "eth0", "netns", v.ns)
	sh(tb.t, "ip", "-n", v.ns, "link", "set", "eth0", "address", mac, "up")
	sh(tb.t, "ip", "-n", v.ns, "link", "set", "lo", "up")
	if addr != "" {
		v.ip = netip.MustParseAddr(addr)
		sh(tb.t, "ip", "-n", v.ns, "addr", "add", fmt.Sprintf("%s/%d", addr, bits), "dev", "eth0")
	}
	tb.vms[name] = v
	return v
}

// serve listens on addr:port in the VM's namespace and answers every
// connection with the VM's name, then echoes.
func (tb *testbed) serve(vm string, addr string, port int) {
	v := tb.vms[vm]
	var l net.Listener
	err := testenv.InNetns(v.ns, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(addr, fmt.Sprint(port)))
		return err
	})
	if err != nil {
		tb.t.Fatalf("listen in %s: %v", vm, err)
	}
	tb.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", vm)
				io.Copy(c, c)
			}()
		}
	}()
}

// dial connects from a VM to addr:port (from local, when set) and
// returns the name the server answered with, or "" when the connection
// failed.
func (tb *testbed) dial(from, addr string, port int, local string) string {
	v := tb.vms[from]
	var c net.Conn
	d := net.Dialer{Timeout: 600 * time.Millisecond}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	err := testenv.InNetns(v.ns, func() (err error) {
		c, err = d.Dial("tcp", net.JoinHostPort(addr, fmt.Sprint(port)))
		return err
	})
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return ""
	}
	return strings.TrimSpace(line)
}

// linkMTU reads a device's MTU in a namespace.
func linkMTU(t testing.TB, ns, dev string) int {
	var l []link
	if err := json.Unmarshal([]byte(sh(t, "ip", "-n", ns, "-j", "link", "show", dev)), &l); err != nil || len(l) != 1 {
		t.Fatalf("ip link show %s in %s: %v", dev, ns, err)
	}
	return l[0].MTU
}

// counters reads a device's byte counters in a namespace.
func counters(t testing.TB, ns, dev string) (rx, tx int64) {
	var l []struct {
		Stats struct {
			RX struct{ Bytes int64 } `json:"rx"`
			TX struct{ Bytes int64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(sh(t, "ip", "-n", ns, "-j", "-s", "link", "show", dev)), &l); err != nil || len(l) != 1 {
		t.Fatalf("ip -s link show %s: %v", dev, err)
	}
	return l[0].Stats.RX.Bytes, l[0].Stats.TX.Bytes
}

// blast sends as fast as it can from one VM to a sink on another for d
// and returns the bytes the sink received.
func (tb *testbed) blast(from, to string, port int, d time.Duration) int64 {
	src, dst := tb.vms[from], tb.vms[to]
	var l net.Listener
	if err := testenv.InNetns(dst.ns, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(dst.ip.String(), fmt.Sprint(port)))
		return err
	}); err != nil {
		tb.t.Fatal(err)
	}
	defer l.Close()
	var got int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		got, _ = io.Copy(io.Discard, c)
	}()
	var c net.Conn
	if err := testenv.InNetns(src.ns, func() (err error) {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(dst.ip.String(), fmt.Sprint(port)), 2*time.Second)
		return err
	}); err != nil {
		tb.t.Fatalf("blast %s→%s: %v", from, to, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	buf := make([]byte, 128<<10)
	go func() { <-ctx.Done(); c.SetWriteDeadline(time.Now()) }()
	for ctx.Err() == nil {
		if _, err := c.Write(buf); err != nil {
			break
		}
	}
	c.Close()
	wg.Wait()
	return got
}

func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	testenv.SkipOrFail(t, format, args...)
}

package netvirt

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"sort"
	"testing"
	"time"
)

// Path benchmarks: throughput and latency between two namespaces on one
// host and across the VXLAN overlay, with vpool's rules, without them
// (the same bridges and overlay, no nftables tables and no br_netfilter),
// and with 1,000 rules on the receiving NIC.
//
//	go test -run XXX -bench BenchmarkPath -benchtime 3x ./internal/netvirt/
//
// Metrics: Mbit/s (TCP goodput over 2 s), rtt-µs (median of 2,000 one-byte
// TCP round trips), conn-µs (median TCP connect time, which pays for the
// rules: established traffic is accepted before any rule is read).
func BenchmarkPath(b *testing.B) {
	for _, path := range []string{"same-host", "overlay"} {
		for _, mode := range []string{"bare", "vpool", "rules-1000"} {
			b.Run(path+"/"+mode, func(b *testing.B) { benchPath(b, path, mode) })
		}
	}
}

// manyRules returns n ingress rules none of which matches the benchmark's
// traffic, then the one that does: the worst case for a new connection.
func manyRules(n int) []Rule {
	rules := make([]Rule, 0, n)
	for i := 0; i < n-1; i++ {
		rules = append(rules, Rule{Protocol: "tcp", PortMin: 10000 + i, PortMax: 10000 + i,
			CIDR: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)}), 32)})
	}
	return append(rules, Rule{Protocol: "tcp"})
}

func benchPath(b *testing.B, path, mode string) {
	tb := newTestbed(b)
	tb.addHosts(1500, "a", "b")
	peerHost := "a"
	if path == "overlay" {
		peerHost = "b"
	}
	tb.addVM("s", "a", "52:54:00:00:06:01", "10.6.0.10", 24)
	tb.addVM("r", peerHost, "52:54:00:00:06:02", "10.6.0.11", 24)
	ingress := []Rule{{Protocol: "tcp"}}
	if mode == "rules-1000" {
		ingress = manyRules(1000)
	}
	n := &tbNet{vni: 6, subnet: "10.6.0.0/24", mtu: 1450, ports: map[string]Port{
		"s": {OpenEgress: true, Ingress: ingress},
		"r": {OpenEgress: true, Ingress: ingress},
	}}
	t0 := time.Now()
	tb.apply([]*tbNet{n}, nil)
	applyMs := float64(time.Since(t0).Microseconds()) / 1000 / float64(len(tb.hosts))
	if mode == "bare" {
		for _, h := range tb.hosts {
			exec.Command("ip", "netns", "exec", h.ns, "nft", "delete", "table", "inet", "vpool").Run()
			exec.Command("ip", "netns", "exec", h.ns, "nft", "delete", "table", "bridge", "vpool").Run()
			exec.Command("ip", "netns", "exec", h.ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0").Run()
		}
	}
	tb.serve("r", "10.6.0.11", 7)
	if got := tb.dial("s", "10.6.0.11", 7, ""); got != "r" {
		b.Fatalf("no path s → r (%q)", got)
	}
	var mbit, rtt, conn []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got := tb.blast("s", "r", 6000+i, 2*time.Second)
		mbit = append(mbit, float64(got)*8/2e6)
		rtt = append(rtt, tb.pingPong(b, "s", "10.6.0.11:7", 2000))
		conn = append(conn, tb.connectTime(b, "s", "10.6.0.11:7", 200))
	}
	b.StopTimer()
	b.ReportMetric(median(mbit), "Mbit/s")
	b.ReportMetric(median(rtt), "rtt-µs")
	b.ReportMetric(median(conn), "conn-µs")
	if mode != "bare" {
		b.ReportMetric(applyMs, "apply-ms/host")
	}
	b.Logf("%s/%s: Mbit/s %v rtt-µs %v conn-µs %v (min/median/max over %d runs)", path, mode,
		minMedMax(mbit), minMedMax(rtt), minMedMax(conn), b.N)
}

// pingPong returns the median round trip in µs of n one-byte exchanges
// over one connection (the server echoes).
func (tb *testbed) pingPong(b *testing.B, from, addr string, n int) float64 {
	var c net.Conn
	if err := inNetns(tb.vms[from].ns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 2*time.Second)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	hello := make([]byte, 64)
	c.Read(hello) // the server's name line
	one := []byte{1}
	lat := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		t := time.Now()
		if _, err := c.Write(one); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, one); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, float64(time.Since(t).Nanoseconds())/1000)
	}
	return median(lat)
}

// connectTime returns the median TCP connect time in µs.
func (tb *testbed) connectTime(b *testing.B, from, addr string, n int) float64 {
	lat := make([]float64, 0, n)
	for i := 0; i < n; i++ {
		var c net.Conn
		t := time.Now()
		if err := inNetns(tb.vms[from].ns, func() (err error) {
			c, err = net.DialTimeout("tcp", addr, 2*time.Second)
			return err
		}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, float64(time.Since(t).Nanoseconds())/1000)
		c.Close()
	}
	return median(lat)
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func minMedMax(v []float64) string {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f/%.0f/%.0f", s[0], s[len(s)/2], s[len(s)-1])
}

// BenchmarkApplyRules times one host's Apply of a ruleset with 1,000
// rules after a change of one rule: what a security group change costs a
// host once the agent has the new view.
func BenchmarkApplyRules(b *testing.B) {
	tb := newTestbed(b)
	tb.addHosts(1500, "a")
	tb.addVM("s", "a", "52:54:00:00:06:01", "10.6.0.10", 24)
	n := &tbNet{vni: 6, subnet: "10.6.0.0/24", mtu: 1450, ports: map[string]Port{"s": {OpenEgress: true, Ingress: manyRules(1000)}}}
	tb.apply([]*tbNet{n}, nil)
	m := tb.hosts["a"].mgr
	b.ResetTimer()
	var ms []float64
	for i := 0; i < b.N; i++ {
		rules := manyRules(1000)
		rules[0].PortMin, rules[0].PortMax = 20000+i%1000, 20000+i%1000
		n.ports["s"] = Port{OpenEgress: true, Ingress: rules}
		p := tb.plans([]*tbNet{n}, nil)["a"]
		t := time.Now()
		if err := m.Apply(context.Background(), p); err != nil {
			b.Fatal(err)
		}
		ms = append(ms, float64(time.Since(t).Microseconds())/1000)
	}
	b.ReportMetric(median(ms), "apply-ms")
	b.Logf("apply of 1000 rules: ms %s (min/median/max over %d)", minMedMax(ms), b.N)
}

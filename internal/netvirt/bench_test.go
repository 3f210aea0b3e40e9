package netvirt

import (
	"context"
	"fmt"
	"github.com/vpool/vpool/internal/testenv"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"sort"
	"testing"
	"time"
)

// Path benchmarks: throughput and latency between two namespaces on one
// host and across the VXLAN overlay, in three modes measured in turns on
// one testbed (so the machine's background load falls on all three
// alike): "bare" — the same bridges and overlay without vpool's tables
// and without br_netfilter; "vpool" — vpool's ruleset with one allow
// rule on the receiving NIC; "rules-1000" — 999 non-matching rules
// before the one that matches (the worst case for a new connection).
//
//	go test -run XXX -bench BenchmarkPath -benchtime 5x ./internal/netvirt/
//
// Each of b.N rounds measures every mode once: Mbit/s (TCP goodput over
// 2 s), rtt-µs (median of 2,000 one-byte TCP round trips) and conn-µs
// (median TCP connect time: a new connection pays for the rules, an
// established one is accepted before any rule is read). The ratios are
// medians of the rounds' own ratios.
func BenchmarkPath(b *testing.B) {
	for _, path := range []string{"same-host", "overlay"} {
		b.Run(path, func(b *testing.B) { benchPath(b, path) })
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

var pathModes = []string{"bare", "vpool", "rules-1000"}

// setMode puts the testbed's hosts in one of pathModes.
func (tb *testbed) setMode(n *tbNet, mode string) {
	ingress := []Rule{{Protocol: "tcp"}}
	if mode == "rules-1000" {
		ingress = manyRules(1000)
	}
	for name := range n.ports {
		n.ports[name] = Port{OpenEgress: true, Ingress: ingress}
	}
	for _, h := range tb.hosts {
		h.mgr.lastRules = "" // bare mode deleted the tables behind its back
		exec.Command("ip", "netns", "exec", h.ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1").Run()
	}
	tb.apply([]*tbNet{n}, nil)
	if mode == "bare" {
		for _, h := range tb.hosts {
			exec.Command("ip", "netns", "exec", h.ns, "nft", "delete", "table", "inet", "vpool").Run()
			exec.Command("ip", "netns", "exec", h.ns, "nft", "delete", "table", "bridge", "vpool").Run()
			exec.Command("ip", "netns", "exec", h.ns, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0").Run()
		}
	}
}

func benchPath(b *testing.B, path string) {
	tb := newTestbed(b)
	tb.addHosts(1500, "a", "b")
	peerHost := "a"
	if path == "overlay" {
		peerHost = "b"
	}
	tb.addVM("s", "a", "52:54:00:00:06:01", "10.6.0.10", 24)
	tb.addVM("r", peerHost, "52:54:00:00:06:02", "10.6.0.11", 24)
	n := &tbNet{vni: 6, subnet: "10.6.0.0/24", mtu: 1450, ports: map[string]Port{"s": {}, "r": {}}}
	tb.serve("r", "10.6.0.11", 7)
	mbit, rtt, conn := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	var costRules, costVpool []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got := map[string]float64{}
		for j, mode := range pathModes {
			tb.setMode(n, mode)
			if tb.dial("s", "10.6.0.11", 7, "") != "r" {
				b.Fatalf("%s: no path s → r", mode)
			}
			m := float64(tb.blast("s", "r", 6000+3*i+j, 2*time.Second)) * 8 / 2e6
			got[mode] = m
			mbit[mode] = append(mbit[mode], m)
			rtt[mode] = append(rtt[mode], tb.pingPong(b, "s", "10.6.0.11:7", 2000))
			conn[mode] = append(conn[mode], tb.connectTime(b, "s", "10.6.0.11:7", 200))
		}
		costRules = append(costRules, 100*(1-got["rules-1000"]/got["vpool"]))
		costVpool = append(costVpool, 100*(1-got["vpool"]/got["bare"]))
	}
	b.StopTimer()
	for _, mode := range pathModes {
		b.ReportMetric(median(mbit[mode]), mode+"-Mbit/s")
		b.ReportMetric(median(rtt[mode]), mode+"-rtt-µs")
		b.ReportMetric(median(conn[mode]), mode+"-conn-µs")
		b.Logf("%s/%s: Mbit/s %s rtt-µs %s conn-µs %s (min/median/max over %d rounds)", path, mode,
			minMedMax(mbit[mode]), minMedMax(rtt[mode]), minMedMax(conn[mode]), b.N)
	}
	b.ReportMetric(median(costRules), "rules-1000-cost-%")
	b.ReportMetric(median(costVpool), "vpool-cost-%")
	b.Logf("%s: throughput cost of 1,000 rules vs vpool's one rule %s %%, of vpool's rules vs bare %s %% (min/median/max of the rounds)",
		path, minMedMax(costRules), minMedMax(costVpool))
}

// pingPong returns the median round trip in µs of n one-byte exchanges
// over one connection (the server echoes).
func (tb *testbed) pingPong(b *testing.B, from, addr string, n int) float64 {
	var c net.Conn
	if err := testenv.InNetns(tb.vms[from].ns, func() (err error) {
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
		if err := testenv.InNetns(tb.vms[from].ns, func() (err error) {
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

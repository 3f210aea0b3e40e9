package haproxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/netvirt"
	"github.com/vpool/vpool/internal/testenv"
)

// bed is a "host" namespace with the network's bridge (vpb-7), member
// namespaces m1..mN running a TCP server that answers each connection
// with its name and then echoes, and a client namespace with eight
// addresses; the balancer's namespace comes from the Runner.
type bed struct {
	t       testing.TB
	prefix  string
	host    string
	runner  *Runner
	members []string
	lis     map[string]net.Listener
}

const bedVNI = 7

func newBed(t testing.TB, members int) *bed {
	testenv.MustHaveRoot(t, "network namespaces")
	testenv.MustHaveTool(t, "ip", "Debian iproute2")
	testenv.MustHaveTool(t, "haproxy", "Debian haproxy (scripts/deps.sh)")
	var b [3]byte
	_, _ = rand.Read(b[:])
	p := "vt" + hex.EncodeToString(b[:])
	bd := &bed{t: t, prefix: p, host: p + "-h", lis: map[string]net.Listener{}}
	t.Cleanup(bd.close)
	sh(t, "ip", "netns", "add", bd.host)
	br := netvirt.BridgeName(bedVNI)
	sh(t, "ip", "-n", bd.host, "link", "add", br, "type", "bridge")
	sh(t, "ip", "-n", bd.host, "link", "set", br, "up")
	for i := 1; i <= members; i++ {
		name := fmt.Sprintf("m%d", i)
		bd.addNS(name, fmt.Sprintf("10.77.0.%d/24", 10+i))
		bd.members = append(bd.members, name)
		bd.serve(name, fmt.Sprintf("10.77.0.%d", 10+i))
	}
	bd.addNS("client", "10.77.0.200/24")
	for i := 1; i < 8; i++ {
		sh(t, "ip", "-n", p+"-client", "addr", "add", fmt.Sprintf("10.77.0.%d/24", 200+i), "dev", "eth0")
	}
	dir, err := os.MkdirTemp("/run", p+"-lb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bd.runner = bd.newRunner(dir)
	t.Cleanup(func() { bd.runner.Shutdown() }) // the runner of the moment: a test may replace it
	return bd
}

// newRunner is a runner of the bed's host on dir: a new agent's, as far
// as HAProxy can tell.
func (bd *bed) newRunner(dir string) *Runner {
	return &Runner{Sys: netvirt.Exec{Netns: bd.host}, Dir: dir, NetnsPrefix: bd.prefix + "-lb"}
}

func sh(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func (bd *bed) close() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], bd.prefix) {
			_ = exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
}

func (bd *bed) addNS(name, addr string) {
	ns := bd.prefix + "-" + name
	sh(bd.t, "ip", "netns", "add", ns)
	sh(bd.t, "ip", "-n", bd.host, "link", "add", "t"+name, "type", "veth", "peer", "name", "eth0", "netns", ns)
	sh(bd.t, "ip", "-n", bd.host, "link", "set", "t"+name, "master", netvirt.BridgeName(bedVNI), "up")
	sh(bd.t, "ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
	sh(bd.t, "ip", "-n", ns, "link", "set", "eth0", "up")
	sh(bd.t, "ip", "-n", ns, "link", "set", "lo", "up")
}

func (bd *bed) serve(name, addr string) {
	var l net.Listener
	if err := testenv.InNetns(bd.prefix+"-"+name, func() (err error) {
		l, err = net.Listen("tcp", addr+":8080")
		return err
	}); err != nil {
		bd.t.Fatal(err)
	}
	bd.lis[name] = l
	bd.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "%s\n", name)
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// spec is the balancer of the bed with the given members (m:draining).
func (bd *bed) spec(alg string, draining ...string) Spec {
	check := model.LBSpec{Network: "lan", Listen: 80}
	if err := check.Validate(); err != nil {
		bd.t.Fatal(err)
	}
	s := Spec{ID: "p/web", VNI: bedVNI, Subnet: netip.MustParsePrefix("10.77.0.0/24"), MTU: 1500, Port: "vlbport", MAC: "0a:00:00:00:00:64",
		VIP: netip.MustParseAddr("10.77.0.100"), Listen: 80, MemberPort: 8080, Algorithm: alg, Check: check.HealthCheck, Drain: 30 * time.Second}
	for i, m := range bd.members {
		s.Members = append(s.Members, Member{Name: m, IP: netip.AddrFrom4([4]byte{10, 77, 0, byte(11 + i)}), Draining: contains(draining, m)})
	}
	return s
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// clientConn opens a connection from the client namespace (from local
// when set) to addr:port and reads the server's name.
func (bd *bed) clientConn(addr string, port int, local string) (net.Conn, string, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	var c net.Conn
	if err := testenv.InNetns(bd.prefix+"-client", func() (err error) {
		c, err = d.Dial("tcp", net.JoinHostPort(addr, fmt.Sprint(port)))
		return err
	}); err != nil {
		return nil, "", err
	}
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		c.Close()
		return nil, "", err
	}
	_ = c.SetDeadline(time.Time{})
	return c, strings.TrimSpace(line), nil
}

func (bd *bed) ask(local string) string {
	c, name, err := bd.clientConn("10.77.0.100", 80, local)
	if err != nil {
		return ""
	}
	c.Close()
	return name
}

func (bd *bed) ensure(s Spec) {
	bd.t.Helper()
	if err := bd.runner.Ensure(context.Background(), s); err != nil {
		bd.t.Fatal(err)
	}
}

func (bd *bed) waitUp(n int) {
	bd.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		st, err := bd.runner.Stats(context.Background(), "p/web")
		up := 0
		for _, s := range st {
			if s.Health == "up" {
				up++
			}
		}
		if err == nil && up >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	bd.t.Fatalf("members not up")
}

// TestRealBalancer serves three members through HAProxy in namespaces:
// each algorithm's distribution, failover of a member that stops
// answering, draining of a removed member (its connection lives on, no
// new ones) and reloads that drop nothing.
func TestRealBalancer(t *testing.T) {
	bd := newBed(t, 3)
	bd.ensure(bd.spec(model.LBRoundRobin))
	bd.waitUp(3)
	t.Run("distribution", func(t *testing.T) {
		for _, alg := range []string{model.LBRoundRobin, model.LBLeastConn, model.LBSource} {
			bd.ensure(bd.spec(alg))
			got := map[string]int{}
			for i := range 60 {
				local := ""
				if alg == model.LBSource {
					local = fmt.Sprintf("10.77.0.%d", 200+i%8)
				}
				got[bd.ask(local)]++
			}
			t.Logf("%s: %v", alg, got)
			switch alg {
			case model.LBSource: // each client address sticks to one member
				for i := range 8 {
					local := fmt.Sprintf("10.77.0.%d", 200+i)
					if a, b := bd.ask(local), bd.ask(local); a == "" || a != b {
						t.Errorf("source: %s went to %q then %q", local, a, b)
					}
				}
			default:
				for _, m := range bd.members {
					if got[m] < 15 {
						t.Errorf("%s: %v is not spread", alg, got)
					}
				}
			}
		}
	})
	t.Run("drain", func(t *testing.T) {
		bd.ensure(bd.spec(model.LBRoundRobin))
		var held net.Conn
		for held == nil {
			c, name, err := bd.clientConn("10.77.0.100", 80, "")
			if err != nil {
				t.Fatal(err)
			}
			if name == "m1" {
				held = c
			} else {
				c.Close()
			}
		}
		defer held.Close()
		bd.ensure(bd.spec(model.LBRoundRobin, "m1"))
		for range 20 {
			if n := bd.ask(""); n == "m1" || n == "" {
				t.Fatalf("a draining member got a new connection (%q)", n)
			}
		}
		st, err := bd.runner.Stats(context.Background(), "p/web")
		if err != nil || st["m1"].Sessions != 1 || st["m1"].Weight != 0 {
			t.Fatalf("draining member's stats across workers: %+v %v", st, err)
		}
		if _, err := fmt.Fprintf(held, "still here\n"); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(held).ReadString('\n')
		if err != nil || line != "still here\n" {
			t.Fatalf("the drained member's connection broke: %q %v", line, err)
		}
		held.Close()
		deadline := time.Now().Add(5 * time.Second)
		for st["m1"].Sessions != 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			st, _ = bd.runner.Stats(context.Background(), "p/web")
		}
		if st["m1"].Sessions != 0 {
			t.Fatalf("sessions after close: %+v", st)
		}
	})
	t.Run("reloads drop nothing", func(t *testing.T) {
		bd.ensure(bd.spec(model.LBRoundRobin))
		stop := make(chan struct{})
		var fails, ok int
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if bd.ask("") == "" {
					fails++
				} else {
					ok++
				}
			}
		})
		algs := []string{model.LBLeastConn, model.LBRoundRobin}
		for i := range 6 {
			bd.ensure(bd.spec(algs[i%2]))
			time.Sleep(50 * time.Millisecond)
		}
		close(stop)
		wg.Wait()
		if fails > 0 || ok < 20 {
			t.Fatalf("%d connections failed, %d passed across 6 reloads", fails, ok)
		}
		t.Logf("%d connections across 6 reloads, none failed", ok)
	})
	t.Run("a restarted agent adopts HAProxy", func(t *testing.T) { bd.restartKeepsConnections(t) })
	t.Run("failover", func(t *testing.T) {
		bd.ensure(bd.spec(model.LBRoundRobin))
		bd.waitUp(3)
		d := bd.failover("m2")
		bound := bd.spec(model.LBRoundRobin).Check.FailoverBound()
		t.Logf("m2 marked down %v after it stopped answering (bound %v)", d, bound)
		if d > 3*time.Second {
			t.Fatalf("failover took %v, more than 3 s", d)
		}
	})
}

// restartKeepsConnections replaces the runner as an agent restart does
// (Close, then a new runner on the same directory) while a connection
// through the balancer is open: the new runner adopts the running
// master — the same pid, the connection still echoes, its session
// counted — and reloads a changed configuration through it.
func (bd *bed) restartKeepsConnections(t *testing.T) {
	s := bd.spec(model.LBRoundRobin)
	bd.ensure(s)
	bd.waitUp(len(bd.members))
	held, member, err := bd.clientConn("10.77.0.100", 80, "")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	pid := func() string {
		b, _ := os.ReadFile(filepath.Join(bd.runner.dir(s.ID), pidFile))
		return string(b)
	}
	before := pid()
	old := bd.runner
	old.Close()
	bd.runner = bd.newRunner(old.Dir)
	if got := bd.runner.Running(); !slices.Equal(got, []string{s.ID}) {
		t.Fatalf("the new runner serves %v, want the running balancer", got)
	}
	bd.ensure(s)
	if now := pid(); now != before || before == "" {
		t.Fatalf("HAProxy was restarted: master %q, now %q", before, now)
	}
	echo := func(what string) {
		t.Helper()
		_ = held.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := fmt.Fprintf(held, "%s\n", what); err != nil {
			t.Fatalf("the connection open across the restart broke (%s): %v", what, err)
		}
		if line, err := bufio.NewReader(held).ReadString('\n'); err != nil || line != what+"\n" {
			t.Fatalf("the connection open across the restart broke (%s): %q %v", what, line, err)
		}
	}
	echo("after the restart")
	st, err := bd.runner.Stats(context.Background(), s.ID)
	if err != nil || st[member].Sessions != 1 {
		t.Fatalf("the adopted HAProxy's stats: %+v %v (want one session on %s)", st, err, member)
	}
	// A changed configuration is a reload of the adopted master.
	bd.ensure(bd.spec(model.LBLeastConn))
	if bd.ask("") == "" {
		t.Fatal("no new connection through the adopted HAProxy after a reload")
	}
	echo("after a reload")
	if now := pid(); now != before {
		t.Fatalf("the reload restarted HAProxy: master %q, now %q", before, now)
	}
}

// failover cuts member m off the network (a dead VM: packets vanish)
// and returns how long until HAProxy stops sending it connections; it
// brings m back afterwards.
func (bd *bed) failover(m string) time.Duration {
	ns := bd.prefix + "-" + m
	start := time.Now()
	sh(bd.t, "ip", "-n", ns, "link", "set", "eth0", "down")
	defer func() {
		sh(bd.t, "ip", "-n", ns, "link", "set", "eth0", "up")
		bd.waitUp(len(bd.members))
	}()
	for time.Since(start) < 10*time.Second {
		st, err := bd.runner.Stats(context.Background(), "p/web")
		if err == nil && st[m].Health == "down" {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	bd.t.Fatalf("%s never marked down", m)
	return 0
}

// BenchmarkBalancer measures requests (one TCP connection each: connect,
// read the member's answer, close) per second and their p99 from eight
// concurrent clients, through HAProxy and directly to one member, and
// the failover time of a member that stops answering.
func BenchmarkBalancer(b *testing.B) {
	bd := newBed(b, 3)
	bd.ensure(bd.spec(model.LBRoundRobin))
	bd.waitUp(3)
	for _, path := range []struct{ name, addr string }{{"direct", "10.77.0.11:8080"}, {"haproxy", "10.77.0.100:80"}} {
		b.Run(path.name, func(b *testing.B) {
			host, port, _ := strings.Cut(path.addr, ":")
			var mu sync.Mutex
			var lat []time.Duration
			fails := 0
			start := time.Now()
			b.ResetTimer()
			var wg sync.WaitGroup
			per := max(b.N/8, 1)
			for range 8 {
				wg.Go(func() {
					var p int
					fmt.Sscan(port, &p)
					mine := make([]time.Duration, 0, per)
					for range per {
						t0 := time.Now()
						c, _, err := bd.clientConn(host, p, "")
						if err != nil {
							mu.Lock()
							fails++
							mu.Unlock()
							continue
						}
						c.Close()
						mine = append(mine, time.Since(t0))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				})
			}
			wg.Wait()
			el := time.Since(start)
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			if len(lat) > 0 {
				b.ReportMetric(float64(len(lat))/el.Seconds(), "req/s")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			}
			b.ReportMetric(float64(fails), "failed")
		})
	}
	b.Run("failover", func(b *testing.B) {
		// A few failovers, whatever b.N (each takes seconds).
		var total time.Duration
		n := min(b.N, 3)
		for range n {
			total += bd.failover("m2")
		}
		b.ReportMetric(float64(total.Milliseconds())/float64(n), "failover-ms")
	})
}

package devenv_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/haproxy"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/netvirt"
	"github.com/vpool/vpool/internal/store/memstore"
	"github.com/vpool/vpool/internal/testenv"
)

// scaleBed is the data path of the scaling benchmark: one real "host"
// namespace holding the network's bridge, on which the balancer host's
// agent serves its balancers with real HAProxy (haproxy.Runner), every
// member VM the sim drivers start gets a namespace standing in for its
// guest (its NIC's address, a TCP server on port 8080 that answers with
// the VM's name), and a client namespace dials the virtual IP. The
// control part is the real one: server, controllers, agents over mutual
// TLS, sim hosts whose VMs' CPU use the benchmark sets.
type scaleBed struct {
	tb     testing.TB
	prefix string
	host   string // the namespace with the bridge
	bridge string
	runner *haproxy.Runner

	mu     sync.Mutex
	load   map[string]float64 // group → busy fraction of its members
	guests map[string]*standIn
	n      int
}

// standIn is a member VM's guest: a namespace with a TCP server.
type standIn struct {
	ns string
	l  net.Listener
}

func newScaleBed(tb testing.TB) *scaleBed {
	testenv.MustHaveRoot(tb, "network namespaces")
	testenv.MustHaveTool(tb, "ip", "Debian iproute2")
	testenv.MustHaveTool(tb, "haproxy", "Debian haproxy (scripts/deps.sh)")
	var r [3]byte
	_, _ = rand.Read(r[:])
	p := "vs" + hex.EncodeToString(r[:])
	sb := &scaleBed{tb: tb, prefix: p, host: p + "-h", load: map[string]float64{}, guests: map[string]*standIn{}}
	tb.Cleanup(sb.close)
	run(tb, "ip", "netns", "add", sb.host)
	dir, err := os.MkdirTemp("/run", p+"-lb")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	sb.runner = &haproxy.Runner{Sys: netvirt.Exec{Netns: sb.host}, Dir: dir, NetnsPrefix: p + "-lb"}
	return sb
}

func run(tb testing.TB, args ...string) {
	tb.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// close stops HAProxy, the stand-ins' servers, and deletes every
// namespace of the bed (cleanup runs after the cluster stopped).
func (sb *scaleBed) close() {
	sb.runner.Shutdown()
	sb.mu.Lock()
	for _, g := range sb.guests {
		g.l.Close()
	}
	sb.mu.Unlock()
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], sb.prefix) {
			_ = exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
}

// usage is the sim hosts' CPU use: a member of group g (VM id
// "project.g-N") is busy sb.load[g].
func (sb *scaleBed) usage(id string, _ time.Time) float64 {
	_, name, _ := strings.Cut(id, ".")
	i := strings.LastIndex(name, "-")
	if i < 0 {
		return 0.05
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if l, ok := sb.load[name[:i]]; ok {
		return l
	}
	return 0.05
}

func (sb *scaleBed) setLoad(group string, f float64) {
	sb.mu.Lock()
	sb.load[group] = f
	sb.mu.Unlock()
}

// guestDriver is a sim driver whose started VMs get a stand-in guest on
// the bed's bridge.
type guestDriver struct {
	*sim.Driver
	sb *scaleBed
}

func (d guestDriver) Start(ctx context.Context, id string) error {
	if err := d.Driver.Start(ctx, id); err != nil {
		return err
	}
	infos, err := d.Driver.List(ctx)
	if err != nil {
		return err
	}
	for _, in := range infos {
		if in.ID == id && len(in.Config.Spec.NICs) > 0 && in.Config.Spec.NICs[0].IP != "" {
			_, name, _ := strings.Cut(id, ".")
			return d.sb.startGuest(id, name, in.Config.Spec.NICs[0].IP)
		}
	}
	return nil
}

func (d guestDriver) Delete(ctx context.Context, id string) error {
	d.sb.stopGuest(id)
	return d.Driver.Delete(ctx, id)
}

func (d guestDriver) Kill(ctx context.Context, id string) error {
	d.sb.stopGuest(id)
	return d.Driver.Kill(ctx, id)
}

func (d guestDriver) Stop(ctx context.Context, id string, timeout time.Duration) error {
	d.sb.stopGuest(id)
	return d.Driver.Stop(ctx, id, timeout)
}

// startGuest gives VM id a namespace with address ip on the bridge and a
// server on ip:8080 answering name.
func (sb *scaleBed) startGuest(id, name, ip string) error {
	sb.mu.Lock()
	if sb.guests[id] != nil {
		sb.mu.Unlock()
		return nil
	}
	sb.n++
	ns, veth := fmt.Sprintf("%s-g%d", sb.prefix, sb.n), fmt.Sprintf("g%d", sb.n)
	sb.mu.Unlock()
	l, err := sb.addNS(ns, veth, ip+"/24")
	if err != nil {
		return err
	}
	sb.mu.Lock()
	sb.guests[id] = &standIn{ns: ns, l: l}
	sb.mu.Unlock()
	go serveName(l, name)
	return nil
}

func (sb *scaleBed) stopGuest(id string) {
	sb.mu.Lock()
	g := sb.guests[id]
	delete(sb.guests, id)
	sb.mu.Unlock()
	if g != nil {
		g.l.Close()
		_ = exec.Command("ip", "netns", "del", g.ns).Run()
	}
}

// addNS makes namespace ns with eth0 (addr) plugged into the bridge
// through veth, and listens on its port 8080.
func (sb *scaleBed) addNS(ns, veth, addr string) (net.Listener, error) {
	for _, c := range [][]string{
		{"ip", "netns", "add", ns},
		{"ip", "-n", sb.host, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns},
		{"ip", "-n", sb.host, "link", "set", veth, "master", sb.bridge, "up"},
		{"ip", "-n", ns, "addr", "add", addr, "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	var l net.Listener
	ip, _, _ := strings.Cut(addr, "/")
	err := testenv.InNetns(ns, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(ip, "8080"))
		return err
	})
	return l, err
}

func serveName(l net.Listener, name string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "%s\n", name)
		c.Close()
	}
}

// ask opens one connection from the client namespace to vip:80 and
// returns the name of the member that answered ("" when none did).
func (sb *scaleBed) ask(vip string) string {
	var c net.Conn
	d := net.Dialer{Timeout: time.Second}
	if err := testenv.InNetns(sb.prefix+"-client", func() (err error) {
		c, err = d.Dial("tcp", net.JoinHostPort(vip, "80"))
		return err
	}); err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return ""
	}
	return strings.TrimSpace(line)
}

// scaleCluster starts three sim hosts serving network lan; h1 alone
// serves balancers, through the bed's HAProxy runner. The client
// namespace gets an address reserved through the address API.
func scaleCluster(b *testing.B, sb *scaleBed) *cluster {
	fn := newFakeNets()
	st := memstore.New()
	b.Cleanup(func() { st.Close() })
	cl := startClusterOpts(b, devenv.ServerConfig{Store: st}, 3, clusterOpts{
		net: func(host string) *agent.NetConfig {
			nc := fn.config(host)
			if host == "h1" {
				nc.Balancers = sb.runner
			}
			return nc
		},
		driver: func(_ string, d *sim.Driver) hypervisor.Driver { return guestDriver{Driver: d, sb: sb} },
		usage:  sb.usage,
	})
	ctx := context.Background()
	nw, err := cl.c.CreateNetwork(ctx, "", api.NetworkCreateRequest{Name: "lan", Spec: model.NetworkSpec{Subnet: "10.1.0.0/24"}})
	if err != nil {
		b.Fatal(err)
	}
	sb.bridge = netvirt.BridgeName(nw.Status.VNI)
	run(b, "ip", "-n", sb.host, "link", "add", sb.bridge, "type", "bridge")
	run(b, "ip", "-n", sb.host, "link", "set", sb.bridge, "up")
	a, err := cl.c.AllocateAddress(ctx, "", "lan", api.AddressRequest{Owner: "bench/client"})
	if err != nil {
		b.Fatal(err)
	}
	l, err := sb.addNS(sb.prefix+"-client", "cl", a.IP+"/24")
	if err != nil {
		b.Fatal(err)
	}
	l.Close()
	return cl
}

// BenchmarkScaleOutServing measures the scaling time the issue asks for:
// a group of two members behind a balancer, at its CPU target (50 %),
// takes a load step to 100 %; from the step to (decide) the group's
// first decision to grow, (in-service) four members running and
// in service, (serving) both new members answering connections through
// the balancer's virtual IP — HAProxy reloaded and its health checks
// passed — and decide-to-serving, the part after the controller saw the
// load. The load reaches the controller as the agents report it: CPU
// use averaged over a heartbeat (3 s), read from the server's usage hub
// (controller.UsageView) as soon as the beat arrives.
// Each iteration is a new group and balancer; min, median and max over
// the iterations are reported.
//
//	go test -run XXX -bench ScaleOutServing -benchtime 5x ./internal/devenv/
func BenchmarkScaleOutServing(b *testing.B) {
	sb := newScaleBed(b)
	cl := scaleCluster(b, sb)
	var decide, inService, serving, after []time.Duration
	b.ResetTimer()
	for i := range b.N {
		d, s, v := scaleOutOnce(b, cl, sb, i)
		decide, inService, serving, after = append(decide, d), append(inService, s), append(serving, v), append(after, v-d)
	}
	b.StopTimer()
	reportSpread(b, "decide", decide)
	reportSpread(b, "in-service", inService)
	reportSpread(b, "serving", serving)
	reportSpread(b, "decide-to-serving", after)
}

// reportSpread reports min, median and max of ds in ms.
func reportSpread(b *testing.B, what string, ds []time.Duration) {
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(ds[0]), what+"-min-ms")
	b.ReportMetric(ms(ds[len(ds)/2]), what+"-median-ms")
	b.ReportMetric(ms(ds[len(ds)-1]), what+"-max-ms")
}

// scaleOutOnce runs one load step on a new group g<i> behind balancer
// lb<i>, then deletes both.
func scaleOutOnce(b *testing.B, cl *cluster, sb *scaleBed, i int) (decide, inService, serving time.Duration) {
	ctx := context.Background()
	g, lbName := fmt.Sprintf("s%d", i), fmt.Sprintf("lb%d", i)
	sb.setLoad(g, 0.5)
	if _, err := cl.c.CreateLB(ctx, "", api.LBCreateRequest{Name: lbName, Spec: model.LBSpec{Network: "lan", Listen: 80,
		MemberPort: 8080, DrainTimeout: 5}}); err != nil {
		b.Fatal(err)
	}
	if _, err := cl.c.CreateGroup(ctx, "", api.GroupCreateRequest{Name: g, Spec: model.GroupSpec{
		Template: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB, NICs: []model.NIC{{Network: "lan"}}},
		Min:      2, Max: 4, TargetCPU: 50, LB: lbName, ScaleOutCooldown: 1}}); err != nil {
		b.Fatal(err)
	}
	lbv, err := cl.c.GetLB(ctx, "", lbName)
	if err != nil {
		b.Fatal(err)
	}
	vip := lbv.Status.VIP
	before := map[string]bool{}
	cl.eventually("two members answer through the balancer", func() bool {
		if n := sb.ask(vip); n != "" {
			before[n] = true
		}
		return len(before) == 2
	})
	// The measurement starts at the load step.
	t0 := time.Now()
	sb.setLoad(g, 1)
	fresh := map[string]bool{}
	for decide == 0 || inService == 0 || len(fresh) < 2 {
		if time.Since(t0) > 60*time.Second {
			b.Fatalf("no scale-out to four serving members within 60 s: decide %v, in service %v, new members answering %v", decide, inService, fresh)
		}
		if decide == 0 || inService == 0 {
			gr, err := cl.c.GetGroup(ctx, "", g)
			if err != nil {
				b.Fatal(err)
			}
			if decide == 0 && gr.Status.Desired > 2 {
				decide = time.Since(t0)
			}
			in := 0
			for _, m := range gr.Status.Members {
				if m.State == model.GroupMemberInService {
					in++
				}
			}
			if inService == 0 && in == 4 {
				inService = time.Since(t0)
			}
		}
		if n := sb.ask(vip); n != "" && !before[n] && !fresh[n] {
			fresh[n] = true
			if len(fresh) == 2 {
				serving = time.Since(t0)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cl.c.DeleteGroup(ctx, "", g); err != nil {
		b.Fatal(err)
	}
	if err := cl.c.DeleteLB(ctx, "", lbName); err != nil {
		b.Fatal(err)
	}
	cl.eventually("the group and the balancer gone", func() bool {
		_, gerr := cl.c.GetGroup(ctx, "", g)
		_, lerr := cl.c.GetLB(ctx, "", lbName)
		return gerr != nil && lerr != nil
	})
	return decide, inService, serving
}

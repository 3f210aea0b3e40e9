package devenv_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/agent"
	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/netvirt"
	"github.com/vpool/vpool/internal/store/memstore"
)

// fakeNets gives every host of an in-process cluster a netvirt.Manager
// over the fake kernel, so the agents render real plans and rulesets.
type fakeNets struct {
	mu   sync.Mutex
	mgrs map[string]*netvirt.Manager
	fks  map[string]*netvirt.Fake
	dhcp map[string]*netvirt.FakeDHCP
	ips  map[string]string
}

func newFakeNets() *fakeNets {
	return &fakeNets{mgrs: map[string]*netvirt.Manager{}, fks: map[string]*netvirt.Fake{}, dhcp: map[string]*netvirt.FakeDHCP{}, ips: map[string]string{}}
}

func (f *fakeNets) config(host string) *agent.NetConfig {
	if host == "h4" {
		return nil // a host that serves no vpool networks
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.mgrs[host] == nil {
		f.fks[host], f.dhcp[host] = netvirt.NewFake(), &netvirt.FakeDHCP{}
		f.mgrs[host] = netvirt.NewManager(f.fks[host], f.dhcp[host], nil)
		f.ips[host] = fmt.Sprintf("192.0.2.%d", len(f.ips)+1)
	}
	return &agent.NetConfig{Overlay: f.ips[host], Manager: f.mgrs[host]}
}

func (f *fakeNets) rules(host string) string {
	f.mu.Lock()
	m := f.mgrs[host]
	f.mu.Unlock()
	return m.Rules()
}

func netCluster(t *testing.T, n int) (*cluster, *fakeNets) {
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	fn := newFakeNets()
	return startClusterNet(t, devenv.ServerConfig{Store: st}, n, fn.config), fn
}

// TestNetworksInProcess: a network across hosts, VMs with NICs placed on
// two hosts, each host's rendering (bridge, overlay entries, rules,
// DHCP reservations), NIC hot-plug, and the pre-check of a migration to
// a host without the network.
func TestNetworksInProcess(t *testing.T) {
	cl, fn := netCluster(t, 4)
	ctx := context.Background()
	c := cl.c
	net, err := c.CreateNetwork(ctx, "", api.NetworkCreateRequest{Name: "lan", Spec: model.NetworkSpec{Subnet: "10.1.0.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []api.SecurityGroupCreateRequest{
		{Name: "web", Rules: []model.Rule{{Direction: "ingress", Protocol: "tcp", PortMin: 80}, {Direction: "egress"}}},
		{Name: "db", Rules: []model.Rule{{Direction: "ingress", Protocol: "tcp", PortMin: 5432, Group: "web"}}},
	} {
		if _, err := c.CreateSecurityGroup(ctx, "", g); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(name, host, group string) *model.VM {
		vm, err := c.CreateVM(ctx, "", api.VMCreateRequest{Name: name, Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB,
			Placement: model.Placement{Host: host}, NICs: []model.NIC{{Network: "lan", SecurityGroups: []string{group}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return vm
	}
	web, db := mk("web1", "h1", "web"), mk("db1", "h2", "db")
	cl.waitPhase("web1", model.PhaseRunning)
	cl.waitPhase("db1", model.PhaseRunning)
	vni := net.Status.VNI
	webTap := netvirt.TapName("h1", "default", "web1", "nic0")
	cl.eventually("rules on both hosts", func() bool {
		r1, r2 := fn.rules("h1"), fn.rules("h2")
		return strings.Contains(r1, webTap) && strings.Contains(r1, "tcp dport 80 accept") &&
			strings.Contains(r2, "tcp dport 5432 accept") && strings.Contains(r2, web.Spec.NICs[0].IP)
	})
	// The driver plugged the NIC into the network's bridge, with the tap
	// the rules name.
	in, ok := cl.driverInfo("h1", "default", "web1")
	if !ok || len(in.Config.Ports) != 1 || in.Config.Ports[0].Tap != webTap || in.Config.Ports[0].Bridge != netvirt.BridgeName(vni) {
		t.Fatalf("web1's ports on h1: %+v", in.Config.Ports)
	}
	// Each host floods to the other and knows the other's VM by MAC.
	cl.eventually("overlay entries", func() bool {
		f1, f2 := fn.fks["h1"].FDB(netvirt.VXLANName(vni)), fn.fks["h2"].FDB(netvirt.VXLANName(vni))
		return slices.Contains(f1, db.Spec.NICs[0].MAC+" 192.0.2.2") && slices.Contains(f2, web.Spec.NICs[0].MAC+" 192.0.2.1") &&
			slices.Contains(f1, "00:00:00:00:00:00 192.0.2.2")
	})
	if got := fn.fks["h3"].Links(); slices.Contains(got, netvirt.BridgeName(vni)) {
		t.Errorf("h3 has no VM on the network but has its bridge: %v", got)
	}
	cl.eventually("DHCP reservations", func() bool {
		d := fn.dhcp["h1"]
		d2 := d.Running()
		return len(d2) == 1 && len(d.Configs[vni].Leases) == 1 && d.Configs[vni].Leases[0].IP.String() == web.Spec.NICs[0].IP
	})

	// NIC hot-plug: the driver gets the NIC with its port; removal undoes.
	if _, err := c.AddNIC(ctx, "", "web1", model.NIC{Network: "lan"}); err != nil {
		t.Fatal(err)
	}
	tap2 := netvirt.TapName("h1", "default", "web1", "nic1")
	cl.eventually("hot-plugged NIC", func() bool {
		in, _ := cl.driverInfo("h1", "default", "web1")
		return len(in.Config.Spec.NICs) == 2 && strings.Contains(fn.rules("h1"), tap2)
	})
	if _, err := c.RemoveNIC(ctx, "", "web1", "nic1"); err != nil {
		t.Fatal(err)
	}
	cl.eventually("unplugged NIC", func() bool {
		in, _ := cl.driverInfo("h1", "default", "web1")
		return len(in.Config.Spec.NICs) == 1 && !strings.Contains(fn.rules("h1"), tap2)
	})

	// A rate limit set live reaches the tap's shaping.
	if _, err := c.PatchNIC(ctx, "", "web1", "nic0", api.NICPatchRequest{QoS: &model.NICQoS{IngressKbps: 100000}}); err != nil {
		t.Fatal(err)
	}
	fn.fks["h1"].AddTap(webTap) // the sim driver makes no taps: stand in for it
	cl.eventually("the limit on the tap", func() bool {
		q := fn.fks["h1"].Qdisc(webTap)
		return len(q) == 2 && strings.Contains(q[1], "rate 100000kbit")
	})
	testMigrationKeepsNetwork(t, cl, fn, vni)
}

// testMigrationKeepsNetwork: a VM moves live from h1 to h3 with its
// address, MAC and rules; the other host's forwarding entry follows; a
// target without vpool networks (h4) is refused by the pre-check. No
// label keeps the VM off h4: the scheduler's network filter does.
func testMigrationKeepsNetwork(t *testing.T, cl *cluster, fn *fakeNets, vni int) {
	ctx := context.Background()
	c := cl.c
	mv, err := c.CreateVM(ctx, "", api.VMCreateRequest{Name: "mover", Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB,
		NICs: []model.NIC{{Network: "lan", SecurityGroups: []string{"web"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	mv = cl.waitPhase("mover", model.PhaseRunning)
	if _, err := c.MigrateVM(ctx, "", api.MigrationRequest{VM: "mover", To: "h4"}); err == nil || !strings.Contains(err.Error(), "serves no vpool networks") {
		t.Errorf("migration to a host without networks: %v", err)
	}
	to := "h3"
	if mv.Status.Host == "h3" {
		to = "h1"
	}
	m, err := c.MigrateVM(ctx, "", api.MigrationRequest{VM: "mover", To: to})
	if err != nil {
		t.Fatal(err)
	}
	cl.eventually("the migration", func() bool {
		got, err := c.GetMigration(ctx, m.Name)
		return err == nil && got.Phase == model.MigrationCompleted
	})
	after, _ := c.GetVM(ctx, "", "mover")
	nic, was := after.Spec.NICs[0], mv.Spec.NICs[0]
	if after.Status.Host != to || nic.IP != was.IP || nic.MAC != was.MAC || len(nic.SecurityGroups) != 1 {
		t.Fatalf("after the move: host %s NIC %+v (was %+v)", after.Status.Host, nic, was)
	}
	tap := netvirt.TapName(to, "default", "mover", "nic0")
	cl.eventually("the target renders the NIC and the other host follows it", func() bool {
		rules := fn.rules(to)
		return strings.Contains(rules, tap) && strings.Contains(rules, nic.IP) && strings.Contains(rules, "tcp dport 80 accept") &&
			slices.Contains(fn.fks["h2"].FDB(netvirt.VXLANName(vni)), nic.MAC+" "+fn.ips[to]) &&
			!strings.Contains(fn.rules(mv.Status.Host), netvirt.TapName(mv.Status.Host, "default", "mover", "nic0"))
	})
}

// BenchmarkRulePropagation: a rule added through the API, until the
// ruleset of every host with a NIC in the group holds it (every host
// renders its new view: server hub → long poll → plan → ruleset).
//
//	go test -run XXX -bench RulePropagation -benchtime 5x ./internal/devenv/
func BenchmarkRulePropagation(b *testing.B) {
	for _, hosts := range []int{10, 50} {
		b.Run(fmt.Sprintf("hosts-%d", hosts), func(b *testing.B) { benchPropagation(b, hosts) })
	}
}

func benchPropagation(b *testing.B, hosts int) {
	st := memstore.New()
	b.Cleanup(func() { st.Close() }) // after the cluster's own cleanup
	fn := newFakeNets()
	cl := startClusterNet(b, devenv.ServerConfig{Store: st}, hosts, fn.config)
	ctx := context.Background()
	c := cl.c
	if _, err := c.CreateNetwork(ctx, "", api.NetworkCreateRequest{Name: "lan", Spec: model.NetworkSpec{Subnet: "10.0.0.0/16"}}); err != nil {
		b.Fatal(err)
	}
	if _, err := c.CreateSecurityGroup(ctx, "", api.SecurityGroupCreateRequest{Name: "web"}); err != nil {
		b.Fatal(err)
	}
	names := make([]string, 0, hosts)
	for i := 1; i <= hosts; i++ {
		h := fmt.Sprintf("h%d", i)
		names = append(names, h)
		if _, err := c.CreateVM(ctx, "", api.VMCreateRequest{Name: "vm-" + h, Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB,
			Placement: model.Placement{Host: h}, NICs: []model.NIC{{Network: "lan", SecurityGroups: []string{"web"}}}}}); err != nil {
			b.Fatal(err)
		}
	}
	waitAll := func(needle string, deadline time.Duration) (time.Duration, bool) {
		t0 := time.Now()
		for time.Since(t0) < deadline {
			all := true
			for _, h := range names {
				if !strings.Contains(fn.rules(h), needle) {
					all = false
					break
				}
			}
			if all {
				return time.Since(t0), true
			}
			time.Sleep(2 * time.Millisecond)
		}
		return 0, false
	}
	if _, ok := waitAll("tcp dport", 0); !ok {
		// every host has its NIC's rules (the group's default egress)
		if _, ok := waitAll("c_egress1", 60*time.Second); !ok {
			b.Fatal("the hosts never rendered their NICs")
		}
	}
	var ms []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		port := 20000 + i
		t0 := time.Now()
		if _, err := c.AddRule(ctx, "", "web", model.Rule{Direction: "ingress", Protocol: "tcp", PortMin: port}); err != nil {
			b.Fatal(err)
		}
		if _, ok := waitAll(fmt.Sprintf("tcp dport %d accept", port), 30*time.Second); !ok {
			b.Fatalf("rule %d did not reach every host", port)
		}
		ms = append(ms, float64(time.Since(t0).Microseconds())/1000)
	}
	b.StopTimer()
	sort.Float64s(ms)
	b.ReportMetric(ms[len(ms)/2], "ms-to-all-hosts")
	b.ReportMetric(ms[len(ms)-1], "max-ms")
	b.Logf("%d hosts: rule to every host min/median/max %.0f/%.0f/%.0f ms over %d", hosts, ms[0], ms[len(ms)/2], ms[len(ms)-1], len(ms))
}

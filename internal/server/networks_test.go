package server

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// TestNetworkBadInput: every refusal names its field, says what to do and
// changes nothing in the store.
func TestNetworkBadInput(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, `{"name":"other"}`, nil)
	ts.mustCall(201, "POST", "/api/v1/networks", admin, `{"name":"n1","spec":{"subnet":"10.1.0.0/24"}}`, nil)
	ts.mustCall(201, "POST", "/api/v1/secgroups", admin, `{"name":"web"}`, nil)
	ts.mustCall(201, "POST", "/api/v1/secgroups?project=other", admin, `{"name":"theirs"}`, nil)
	ts.mustCall(201, "POST", "/api/v1/vms", admin, vmReq("v1"), nil)
	nicVM := func(nic string) string {
		return `{"name":"vn","spec":{"vcpus":1,"memory":67108864,"nics":[` + nic + `]}}`
	}
	tests := []struct {
		name, method, path, body string
		status                   int
		field                    string
	}{
		{"overlapping subnet", "POST", "/api/v1/networks", `{"name":"n2","spec":{"subnet":"10.1.0.128/25"}}`, 400, "spec.subnet"},
		{"enclosing subnet", "POST", "/api/v1/networks", `{"name":"n2","spec":{"subnet":"10.0.0.0/8"}}`, 400, "spec.subnet"},
		{"not a prefix", "POST", "/api/v1/networks", `{"name":"n2","spec":{"subnet":"10.1.0.0"}}`, 400, "spec.subnet"},
		{"host bits", "POST", "/api/v1/networks", `{"name":"n2","spec":{"subnet":"10.2.0.1/24"}}`, 400, "spec.subnet"},
		{"IPv6", "POST", "/api/v1/networks", `{"name":"n2","spec":{"subnet":"fd00::/64"}}`, 400, "spec.subnet"},
		{"gateway outside", "POST", "/api/v1/networks", `{"name":"n2","spec":{"subnet":"10.2.0.0/24","gateway":"10.3.0.1"}}`, 400, "spec.gateway"},
		{"MTU too big", "POST", "/api/v1/networks", `{"name":"n2","spec":{"subnet":"10.2.0.0/24","mtu":65000}}`, 400, "spec.mtu"},
		{"VLAN without id", "POST", "/api/v1/networks", `{"name":"n2","spec":{"subnet":"10.2.0.0/24","mode":"vlan"}}`, 400, "spec.vlan"},
		{"VLAN id 5000", "POST", "/api/v1/networks", `{"name":"n2","spec":{"subnet":"10.2.0.0/24","mode":"vlan","vlan":5000}}`, 400, "spec.vlan"},
		{"bad mode", "POST", "/api/v1/networks", `{"name":"n2","spec":{"subnet":"10.2.0.0/24","mode":"gre"}}`, 400, "spec.mode"},
		{"network name taken", "POST", "/api/v1/networks", `{"name":"n1","spec":{"subnet":"10.9.0.0/24"}}`, 409, ""},
		{"port 70000", "POST", "/api/v1/secgroups/web/rules", `{"direction":"ingress","protocol":"tcp","portMin":70000}`, 400, "portMin"},
		{"range backwards", "POST", "/api/v1/secgroups/web/rules", `{"direction":"ingress","protocol":"tcp","portMin":90,"portMax":80}`, 400, "portMax"},
		{"ports without tcp/udp", "POST", "/api/v1/secgroups/web/rules", `{"direction":"ingress","protocol":"icmp","portMin":80}`, 400, "portMin"},
		{"bad direction", "POST", "/api/v1/secgroups/web/rules", `{"direction":"inbound"}`, 400, "direction"},
		{"bad cidr", "POST", "/api/v1/secgroups/web/rules", `{"direction":"ingress","cidr":"10.0.0.0/40"}`, 400, "cidr"},
		{"group of another project", "POST", "/api/v1/secgroups/web/rules", `{"direction":"ingress","group":"theirs"}`, 400, "group"},
		{"cidr and group", "POST", "/api/v1/secgroups/web/rules", `{"direction":"ingress","cidr":"10.0.0.0/8","group":"web"}`, 400, "group"},
		{"group create with a foreign peer", "POST", "/api/v1/secgroups", `{"name":"g2","rules":[{"direction":"ingress","group":"theirs"}]}`, 400, "rules[0].group"},
		{"address outside the subnet", "POST", "/api/v1/vms", nicVM(`{"network":"n1","ip":"10.9.0.5"}`), 400, "spec.nics[0].ip"},
		{"the broadcast address", "POST", "/api/v1/vms", nicVM(`{"network":"n1","ip":"10.1.0.255"}`), 400, "spec.nics[0].ip"},
		{"groups on a network that does not exist", "POST", "/api/v1/vms", nicVM(`{"network":"nope","securityGroups":["web"]}`), 400, "spec.nics[0].network"},
		{"unknown group", "POST", "/api/v1/vms", nicVM(`{"network":"n1","securityGroups":["nope"]}`), 400, "spec.nics[0].securityGroups[0]"},
		{"another project's group", "POST", "/api/v1/vms", nicVM(`{"network":"n1","securityGroups":["theirs"]}`), 400, "spec.nics[0].securityGroups[0]"},
		{"rate too low", "POST", "/api/v1/vms", nicVM(`{"network":"n1","qos":{"ingressKbps":1}}`), 400, "spec.nics[0].qos.ingressKbps"},
		{"address without network", "POST", "/api/v1/vms", nicVM(`{"ip":"10.1.0.5"}`), 400, "spec.nics[0].ip"},
		{"nic add: outside the subnet", "POST", "/api/v1/vms/v1/nics", `{"network":"n1","ip":"192.168.0.1"}`, 400, "spec.nics[0].ip"},
		{"nic patch: unknown group", "PATCH", "/api/v1/vms/v1/nics/nic0", `{"securityGroups":["nope"]}`, 400, "securityGroups[0]"},
		{"address owner vm/", "POST", "/api/v1/networks/n1/addresses", `{"owner":"vm/x/nic0"}`, 400, "owner"},
		{"address outside", "POST", "/api/v1/networks/n1/addresses", `{"owner":"lb/web","ip":"10.7.0.1"}`, 400, "ip"},
	}
	before := snapshot(t, ts.st)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, e := ts.call(tt.method, tt.path, admin, tt.body, nil)
			if code != tt.status || e.Field != tt.field || e.Message == "" {
				t.Fatalf("%s %s %.90s = %d %+v; want %d field %q", tt.method, tt.path, tt.body, code, e, tt.status, tt.field)
			}
		})
	}
	after := snapshot(t, ts.st)
	if d := cmp.Diff(before, after); d != "" {
		t.Errorf("refused requests changed the store (-before +after):\n%s", d)
	}
}

// TestConcurrentNICCreates: 200 VMs with a NIC on one /24, created at
// once through the API, get 200 distinct addresses; on a /27 the extra
// creates are refused (409 naming the NIC's network) and leave nothing.
func TestConcurrentNICCreates(t *testing.T) {
	runNICRace(t, startServer(t, nil))
}

// TestConcurrentNICCreatesOnEtcd is the same race on a real embedded etcd.
func TestConcurrentNICCreatesOnEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	runNICRace(t, startServer(t, startEtcd(t, true)))
}

func runNICRace(t *testing.T, ts *testServer) {
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/networks", admin, `{"name":"big","spec":{"subnet":"10.1.0.0/24"}}`, nil)
	ts.mustCall(201, "POST", "/api/v1/networks", admin, `{"name":"small","spec":{"subnet":"10.2.0.0/27"}}`, nil)
	for _, c := range []struct {
		network    string
		n, want    int
		wantRefuse int
	}{{"big", 200, 200, 0}, {"small", 40, 29, 11}} {
		t.Run(c.network, func(t *testing.T) {
			var mu sync.Mutex
			ips := map[string]string{}
			refused := 0
			var wg sync.WaitGroup
			for i := range c.n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req := api.VMCreateRequest{Name: fmt.Sprintf("%s%d", c.network, i), Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB,
						NICs: []model.NIC{{Network: c.network}}}}
					var vm model.VM
					code, e := ts.call("POST", "/api/v1/vms", admin, req, &vm)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case code == 201:
						ip := vm.Spec.NICs[0].IP
						if o, dup := ips[ip]; dup {
							t.Errorf("%s given to %s and %s", ip, o, vm.Name)
						}
						ips[ip] = vm.Name
					case code == 409 && e.Field == "spec.nics[0].network":
						refused++
					default:
						t.Errorf("create %d: %d %+v", i, code, e)
					}
				}()
			}
			wg.Wait()
			if len(ips) != c.want || refused != c.wantRefuse {
				t.Errorf("%d created, %d refused; want %d and %d", len(ips), refused, c.want, c.wantRefuse)
			}
			var as api.AddressList
			ts.mustCall(200, "GET", "/api/v1/networks/"+c.network+"/addresses", admin, nil, &as)
			if len(as.Addresses) != c.want {
				t.Errorf("%d addresses allocated, want %d (a refused create left one)", len(as.Addresses), c.want)
			}
		})
	}
}

func TestNICLifecycle(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/networks", admin, `{"name":"n1","spec":{"subnet":"10.1.0.0/24"}}`, nil)
	ts.mustCall(201, "POST", "/api/v1/secgroups", admin, `{"name":"web"}`, nil)
	var vm model.VM
	ts.mustCall(201, "POST", "/api/v1/vms", admin, `{"name":"v","spec":{"vcpus":1,"memory":67108864,"nics":[{"network":"n1","ip":"10.1.0.7","securityGroups":["web"]}]}}`, &vm)
	nic := vm.Spec.NICs[0]
	if nic.Name != "nic0" || nic.IP != "10.1.0.7" || model.ValidMAC("mac", nic.MAC) != nil {
		t.Fatalf("created NIC %+v", nic)
	}
	code, e := ts.call("POST", "/api/v1/vms", admin, `{"name":"w","spec":{"vcpus":1,"memory":67108864,"nics":[{"network":"n1","ip":"10.1.0.7"}]}}`, nil)
	if code != 409 || e.Field != "spec.nics[0].ip" {
		t.Errorf("a taken fixed address: %d %+v", code, e)
	}
	ts.mustCall(202, "POST", "/api/v1/vms/v/nics", admin, `{"network":"n1"}`, &vm)
	if len(vm.Spec.NICs) != 2 || vm.Spec.NICs[1].Name != "nic1" || !netip.MustParsePrefix("10.1.0.0/24").Contains(netip.MustParseAddr(vm.Spec.NICs[1].IP)) {
		t.Fatalf("after nic add: %+v", vm.Spec.NICs)
	}
	ts.mustCall(202, "PATCH", "/api/v1/vms/v/nics/nic1", admin, `{"qos":{"ingressKbps":100000},"securityGroups":["web"]}`, &vm)
	if q := vm.Spec.NICs[1].QoS; q == nil || q.IngressKbps != 100000 || len(vm.Spec.NICs[1].SecurityGroups) != 1 {
		t.Fatalf("after nic patch: %+v", vm.Spec.NICs[1])
	}
	code, e = ts.call("DELETE", "/api/v1/networks/n1", admin, nil, nil)
	if code != 409 || e.Message == "" {
		t.Errorf("delete of a used network: %d %+v", code, e)
	}
	code, e = ts.call("DELETE", "/api/v1/secgroups/web", admin, nil, nil)
	if code != 409 {
		t.Errorf("delete of a used group: %d %+v", code, e)
	}
	ts.mustCall(202, "DELETE", "/api/v1/vms/v/nics/nic1", admin, nil, &vm)
	var as api.AddressList
	ts.mustCall(200, "GET", "/api/v1/networks/n1/addresses", admin, nil, &as)
	if len(as.Addresses) != 1 || as.Addresses[0].Owner != "vm/v/nic0" {
		t.Errorf("after nic remove the pool holds %+v", as.Addresses)
	}
	var batch api.VMBatchResponse
	ts.mustCall(201, "POST", "/api/v1/vms:batch", admin, `{"prefix":"b","count":3,"spec":{"vcpus":1,"memory":67108864,"nics":[{"network":"n1"}]}}`, &batch)
	seen := map[string]bool{}
	for _, v := range batch.VMs {
		n := v.Spec.NICs[0]
		if seen[n.IP] || seen[n.MAC] {
			t.Errorf("batch VM %s shares its NIC's address or MAC: %+v", v.Name, n)
		}
		seen[n.IP], seen[n.MAC] = true, true
	}
	var vip model.AddressAlloc
	ts.mustCall(201, "POST", "/api/v1/networks/n1/addresses", admin, `{"owner":"lb/web"}`, &vip)
	ts.mustCall(409, "DELETE", "/api/v1/networks/n1/addresses/10.1.0.7", admin, nil, nil)
	ts.mustCall(204, "DELETE", "/api/v1/networks/n1/addresses/"+vip.IP+"?owner=lb/web", admin, nil, nil)
}

package cli

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// networkHandlers serve networks, security groups and NICs in memory.
func (f *fakeServer) networkHandlers() map[string]handler {
	nets := map[string]*model.Network{}
	groups := map[string]*model.SecurityGroup{}
	ok := func(v any) (any, *apiErr) { return v, nil }
	group := func(r *http.Request) (*model.SecurityGroup, *apiErr) {
		g := groups[r.PathValue("name")]
		if g == nil {
			return nil, fail(404, api.CodeNotFound, "", "security group %q not found", r.PathValue("name"))
		}
		return g, nil
	}
	return map[string]handler{
		"GET /api/v1/networks": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			out := api.NetworkList{Networks: []model.Network{}}
			for _, n := range nets {
				out.Networks = append(out.Networks, *n)
			}
			return out, nil
		},
		"POST /api/v1/networks": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.NetworkCreateRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			if err := req.Spec.Validate(); err != nil {
				fe := err.(*model.FieldError)
				return nil, fail(400, api.CodeInvalidField, fe.Field, "%s", fe.Message)
			}
			n := &model.Network{Meta: model.Meta{Name: req.Name, Project: project(r)}, Spec: req.Spec, Status: model.NetworkStatus{VNI: len(nets) + 1}}
			nets[req.Name] = n
			w.WriteHeader(http.StatusCreated)
			return n, nil
		},
		"GET /api/v1/networks/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			if n := nets[r.PathValue("name")]; n != nil {
				return n, nil
			}
			return nil, fail(404, api.CodeNotFound, "", "network %q not found", r.PathValue("name"))
		},
		"DELETE /api/v1/networks/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			delete(nets, r.PathValue("name"))
			w.WriteHeader(http.StatusNoContent)
			return nil, nil
		},
		"GET /api/v1/networks/{name}/addresses": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return ok(api.AddressList{Addresses: []model.AddressAlloc{{Network: r.PathValue("name"), IP: "10.1.0.5", Owner: "vm/web1/nic0"}}})
		},
		"POST /api/v1/networks/{name}/addresses": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			w.WriteHeader(http.StatusCreated)
			return ok(model.AddressAlloc{Network: r.PathValue("name"), IP: "10.1.0.9", Owner: "lb/web"})
		},
		"DELETE /api/v1/networks/{name}/addresses/{ip}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			w.WriteHeader(http.StatusNoContent)
			return nil, nil
		},
		"GET /api/v1/secgroups": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			out := api.SecurityGroupList{SecurityGroups: []model.SecurityGroup{}}
			for _, g := range groups {
				out.SecurityGroups = append(out.SecurityGroups, *g)
			}
			return out, nil
		},
		"POST /api/v1/secgroups": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.SecurityGroupCreateRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			g := &model.SecurityGroup{Meta: model.Meta{Name: req.Name, Project: project(r)}}
			if !req.NoDefaultEgress {
				g.Spec.Rules = []model.Rule{{ID: "r0", Direction: "egress", Protocol: "any"}}
			}
			groups[req.Name] = g
			w.WriteHeader(http.StatusCreated)
			return g, nil
		},
		"GET /api/v1/secgroups/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) { return group(r) },
		"DELETE /api/v1/secgroups/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			delete(groups, r.PathValue("name"))
			w.WriteHeader(http.StatusNoContent)
			return nil, nil
		},
		"POST /api/v1/secgroups/{name}/rules": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			g, e := group(r)
			if e != nil {
				return nil, e
			}
			var rule model.Rule
			if e := decodeStrict(body, &rule); e != nil {
				return nil, e
			}
			rule.ID = "r1"
			g.Spec.Rules = append(g.Spec.Rules, rule)
			w.WriteHeader(http.StatusCreated)
			return g, nil
		},
		"DELETE /api/v1/secgroups/{name}/rules/{id}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			g, e := group(r)
			if e != nil {
				return nil, e
			}
			g.Spec.Rules = slices.DeleteFunc(g.Spec.Rules, func(x model.Rule) bool { return x.ID == r.PathValue("id") })
			return g, nil
		},
		"POST /api/v1/vms/{name}/nics": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			vm, e := f.vm(r)
			if e != nil {
				return nil, e
			}
			var nic model.NIC
			if e := decodeStrict(body, &nic); e != nil {
				return nil, e
			}
			nic.Name, nic.IP = "nic9", "10.1.0.9"
			vm.Spec.NICs = append(vm.Spec.NICs, nic)
			w.WriteHeader(http.StatusAccepted)
			return vm, nil
		},
		"PATCH /api/v1/vms/{name}/nics/{nic}": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			vm, e := f.vm(r)
			if e != nil {
				return nil, e
			}
			var req api.NICPatchRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			w.WriteHeader(http.StatusAccepted)
			return vm, nil
		},
		"DELETE /api/v1/vms/{name}/nics/{nic}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			vm, e := f.vm(r)
			if e != nil {
				return nil, e
			}
			vm.Spec.NICs = slices.DeleteFunc(vm.Spec.NICs, func(n model.NIC) bool { return n.Name == r.PathValue("nic") })
			w.WriteHeader(http.StatusAccepted)
			return vm, nil
		},
	}
}

func TestNetworkCommands(t *testing.T) {
	f := newFake(t)
	seed(f)
	for _, tc := range []struct {
		name     string
		args     []string
		pattern  string
		wantBody string // the request body, when the command writes
	}{
		{"network create", []string{"network", "create", "lan", "--subnet", "10.1.0.0/24", "--mtu", "1400", "--dhcp", "off"},
			"POST /api/v1/networks", `{"name":"lan","spec":{"subnet":"10.1.0.0/24","mode":"vxlan","mtu":1400,"dhcp":false}}`},
		{"network create vlan", []string{"network", "create", "dmz", "--subnet", "10.2.0.0/24", "--vlan", "100"},
			"POST /api/v1/networks", `{"name":"dmz","spec":{"subnet":"10.2.0.0/24","mode":"vlan","vlan":100,"dhcp":true}}`},
		{"secgroup create", []string{"secgroup", "create", "web"}, "POST /api/v1/secgroups", `{"name":"web"}`},
		{"rule add", []string{"secgroup", "rule", "add", "web", "--direction", "ingress", "--protocol", "tcp", "--port", "8000-8100", "--cidr", "10.0.0.0/8"},
			"POST /api/v1/secgroups/{name}/rules", `{"direction":"ingress","protocol":"tcp","portMin":8000,"portMax":8100,"cidr":"10.0.0.0/8"}`},
		{"rule delete", []string{"secgroup", "rule", "delete", "web", "r1"}, "DELETE /api/v1/secgroups/{name}/rules/{id}", ""},
		{"vm create --nic", []string{"vm", "create", "n1", "--nic", "lan,ip=10.1.0.7,sg=web+ssh,in=100Mbit,out=1Gbit"},
			"POST /api/v1/vms", ""},
		{"nic add", []string{"vm", "nic", "add", "web1", "lan,sg=web"}, "POST /api/v1/vms/{name}/nics", `{"network":"lan","securityGroups":["web"]}`},
		{"nic set", []string{"vm", "nic", "set", "web1", "nic0", "--sg", "web", "--in", "50Mbit"},
			"PATCH /api/v1/vms/{name}/nics/{nic}", `{"securityGroups":["web"],"qos":{"ingressKbps":50000}}`},
		{"nic remove", []string{"vm", "nic", "remove", "web1", "nic9"}, "DELETE /api/v1/vms/{name}/nics/{nic}", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := f.cli(t, tc.args...)
			if res.code != 0 {
				t.Fatalf("code %d, stderr %q", res.code, res.stderr)
			}
			c := f.lastWrite(t)
			if c.Pattern != tc.pattern || (tc.wantBody != "" && c.Body != tc.wantBody) {
				t.Errorf("sent %s %s, want %s %s", c.Pattern, c.Body, tc.pattern, tc.wantBody)
			}
			if tc.name == "vm create --nic" {
				var req api.VMCreateRequest
				json.Unmarshal([]byte(c.Body), &req)
				n := req.Spec.NICs[0]
				if n.Network != "lan" || n.IP != "10.1.0.7" || strings.Join(n.SecurityGroups, ",") != "web,ssh" || n.QoS.IngressKbps != 100000 || n.QoS.EgressKbps != 1000000 {
					t.Errorf("NIC sent: %+v", n)
				}
			}
		})
	}
	for _, bad := range [][]string{
		{"network", "create", "x"},
		{"network", "create", "x", "--subnet", "10.0.0.0/24", "--vxlan", "--vlan", "5"},
		{"vm", "nic", "add", "web1", "lan,speed=fast"},
		{"vm", "nic", "add", "web1", "lan,in=fast"},
		{"secgroup", "rule", "add", "web", "--port", "http"},
	} {
		if res := f.cli(t, bad...); res.code != 2 {
			t.Errorf("%v: code %d (stderr %q), want 2 (usage)", bad, res.code, res.stderr)
		}
	}
}

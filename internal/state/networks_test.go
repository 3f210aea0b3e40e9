package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

func mkNet(t *testing.T, r *Repo, project, name, subnet string) (*model.Network, error) {
	t.Helper()
	n := &model.Network{Meta: model.Meta{Name: name, Project: project}, Spec: model.NetworkSpec{Subnet: subnet}}
	if err := n.Spec.Validate(); err != nil {
		t.Fatal(err)
	}
	return r.CreateNetwork(context.Background(), n)
}

func TestCreateNetworkRefusesOverlaps(t *testing.T) {
	r := newRepo(t)
	mustProject(t, r, "p", model.Quota{})
	mustProject(t, r, "q", model.Quota{})
	a, err := mkNet(t, r, "p", "a", "10.1.0.0/24")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, project, net, subnet string
		field                      string // "" = accepted
		err                        error
	}{
		{"inside an existing subnet", "p", "b", "10.1.0.128/25", "spec.subnet", nil},
		{"around an existing subnet", "p", "c", "10.0.0.0/8", "spec.subnet", nil},
		{"beside it", "p", "d", "10.1.1.0/24", "", nil},
		{"the same subnet in another project", "q", "a", "10.1.0.0/24", "", nil},
		{"a taken name", "p", "a", "10.9.0.0/24", "", ErrExists},
		{"an unknown project", "nope", "x", "10.8.0.0/24", "", store.ErrNotFound},
	}
	vnis := map[int]bool{a.Status.VNI: true}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := mkNet(t, r, c.project, c.net, c.subnet)
			var fe *model.FieldError
			switch {
			case c.field != "":
				if !errors.As(err, &fe) || fe.Field != c.field {
					t.Fatalf("got %v, want a field error on %s", err, c.field)
				}
			case c.err != nil:
				if !errors.Is(err, c.err) {
					t.Fatalf("got %v, want %v", err, c.err)
				}
			case err != nil:
				t.Fatal(err)
			default:
				if vnis[n.Status.VNI] {
					t.Errorf("VNI %d given twice", n.Status.VNI)
				}
				vnis[n.Status.VNI] = true
			}
		})
	}
}

// TestConcurrentAllocations: 200 allocators at once on a /24 get 200
// distinct addresses; 40 on a /27 (29 free beside the gateway) get 29
// and 11 clear refusals.
func TestConcurrentAllocations(t *testing.T) {
	for _, c := range []struct {
		subnet          string
		n, want, refuse int
	}{
		{"10.1.0.0/24", 200, 200, 0},
		{"10.2.0.0/27", 40, 29, 11},
	} {
		t.Run(c.subnet, func(t *testing.T) {
			r := newRepo(t)
			mustProject(t, r, "p", model.Quota{})
			if _, err := mkNet(t, r, "p", "n", c.subnet); err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			got := map[string]string{}
			refused := 0
			var wg sync.WaitGroup
			for i := range c.n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					a, err := r.AllocateAddress(context.Background(), "p", "n", fmt.Sprintf("vm/v%d/nic0", i), "", "")
					mu.Lock()
					defer mu.Unlock()
					switch {
					case errors.Is(err, ErrPoolFull):
						refused++
					case err != nil:
						t.Errorf("allocation %d: %v", i, err)
					default:
						if o, dup := got[a.IP]; dup {
							t.Errorf("%s given to %s and %s", a.IP, o, a.Owner)
						}
						got[a.IP] = a.Owner
					}
				}()
			}
			wg.Wait()
			if len(got) != c.want || refused != c.refuse {
				t.Errorf("%d addresses and %d refusals, want %d and %d", len(got), refused, c.want, c.refuse)
			}
			if _, ok := got["10.1.0.1"]; ok {
				t.Error("the gateway was allocated")
			}
			stored, _ := r.ListAddresses(context.Background(), "p", "n")
			if len(stored) != c.want {
				t.Errorf("%d addresses stored, want %d", len(stored), c.want)
			}
		})
	}
}

func TestFixedAddresses(t *testing.T) {
	r := newRepo(t)
	ctx := context.Background()
	mustProject(t, r, "p", model.Quota{})
	mkNet(t, r, "p", "n", "10.1.0.0/24")
	if _, err := r.AllocateAddress(ctx, "p", "n", "vm/a/nic0", "", "10.1.0.50"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, owner, ip string
		field           string
		err             error
	}{
		{"taken by another", "vm/b/nic0", "10.1.0.50", "", ErrAddressTaken},
		{"the same owner again", "vm/a/nic0", "10.1.0.50", "", nil},
		{"outside the subnet", "vm/b/nic0", "10.2.0.5", "ip", nil},
		{"the broadcast address", "vm/b/nic0", "10.1.0.255", "ip", nil},
		{"the gateway", "vm/b/nic0", "10.1.0.1", "ip", nil},
		{"not an address", "vm/b/nic0", "10.1.0.x", "ip", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := r.AllocateAddress(ctx, "p", "n", c.owner, "", c.ip)
			var fe *model.FieldError
			switch {
			case c.field != "":
				if !errors.As(err, &fe) || fe.Field != c.field {
					t.Errorf("got %v, want a field error on %s", err, c.field)
				}
			case c.err != nil:
				if !errors.Is(err, c.err) {
					t.Errorf("got %v, want %v", err, c.err)
				}
			case err != nil:
				t.Error(err)
			}
		})
	}
}

func TestDeleteNetworkInUse(t *testing.T) {
	r := newRepo(t)
	ctx := context.Background()
	mustProject(t, r, "p", model.Quota{})
	mkNet(t, r, "p", "n", "10.1.0.0/24")
	a, _ := r.AllocateAddress(ctx, "p", "n", "vm/web/nic0", "", "")
	err := r.DeleteNetwork(ctx, "p", "n")
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "vm/web/nic0") {
		t.Fatalf("delete of a used network: %v, want ErrInUse naming vm/web/nic0", err)
	}
	if n, err := r.GetNetwork(ctx, "p", "n"); err != nil || n.DeletedAt != nil {
		t.Fatalf("a refused delete left the network %+v, %v", n, err)
	}
	if err := r.ReleaseAddress(ctx, "p", "n", a.IP, "vm/other/nic0"); !errors.Is(err, ErrAddressTaken) {
		t.Errorf("release by another owner: %v", err)
	}
	if err := r.ReleaseAddress(ctx, "p", "n", a.IP, "vm/web/nic0"); err != nil {
		t.Fatal(err)
	}
	if err := r.DeleteNetwork(ctx, "p", "n"); err != nil {
		t.Fatal(err)
	}
	// The name, subnet and VNI are free again.
	if _, err := mkNet(t, r, "p", "n", "10.1.0.0/24"); err != nil {
		t.Fatal(err)
	}
}

func TestSweepAddresses(t *testing.T) {
	st := newRepo(t).Store()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := New(st, func() time.Time { return now })
	ctx := context.Background()
	mustProject(t, r, "p", model.Quota{})
	mkNet(t, r, "p", "n", "10.1.0.0/24")
	vm := mkVM("p", "kept", 1, 64*model.MiB)
	vm.Spec.NICs = []model.NIC{{Name: "nic0", Network: "n", IP: "10.1.0.10"}}
	if _, err := r.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct{ owner, ip string }{
		{"vm/kept/nic0", "10.1.0.10"}, // held
		{"vm/kept/nic1", "10.1.0.11"}, // the VM has no nic1
		{"vm/gone/nic0", "10.1.0.12"}, // no such VM
		{"lb/web", "10.1.0.13"},       // not a VM's
	} {
		if _, err := r.AllocateAddress(ctx, "p", "n", a.owner, "", a.ip); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := r.SweepAddresses(ctx, time.Minute); err != nil || n != 0 {
		t.Fatalf("within the grace period the sweep released %d (%v)", n, err)
	}
	now = now.Add(2 * time.Minute)
	if n, err := r.SweepAddresses(ctx, time.Minute); err != nil || n != 2 {
		t.Fatalf("the sweep released %d (%v), want 2", n, err)
	}
	left, _ := r.ListAddresses(ctx, "p", "n")
	var ips []string
	for _, a := range left {
		ips = append(ips, a.IP)
	}
	if strings.Join(ips, ",") != "10.1.0.10,10.1.0.13" {
		t.Errorf("left %v", ips)
	}
}

func TestSecurityGroupRules(t *testing.T) {
	r := newRepo(t)
	ctx := context.Background()
	mustProject(t, r, "p", model.Quota{})
	if _, err := r.CreateSecurityGroup(ctx, &model.SecurityGroup{Meta: model.Meta{Name: "web", Project: "p"}}); err != nil {
		t.Fatal(err)
	}
	rule := model.Rule{Direction: "ingress", Protocol: "tcp", PortMin: 80, PortMax: 80}
	_, added, err := r.AddRule(ctx, "p", "web", rule)
	if err != nil || added.ID == "" {
		t.Fatalf("add rule: %+v %v", added, err)
	}
	if _, _, err := r.AddRule(ctx, "p", "web", rule); !errors.Is(err, ErrExists) {
		t.Errorf("the same rule twice: %v", err)
	}
	vm := mkVM("p", "v", 1, 64*model.MiB)
	vm.Spec.NICs = []model.NIC{{Name: "nic0", Network: "n", SecurityGroups: []string{"web"}}}
	r.CreateVM(ctx, vm)
	if err := r.DeleteSecurityGroup(ctx, "p", "web"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "VM v NIC nic0") {
		t.Errorf("delete of a used group: %v", err)
	}
	g, err := r.DeleteRule(ctx, "p", "web", added.ID)
	if err != nil || len(g.Spec.Rules) != 0 {
		t.Fatalf("delete rule: %v", err)
	}
	if _, err := r.DeleteRule(ctx, "p", "web", added.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete of a missing rule: %v", err)
	}
}

package state

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

func mkLB(r *Repo, name, network, ip string) (*model.LoadBalancer, error) {
	b := &model.LoadBalancer{Meta: model.Meta{Name: name, Project: "p"}, Spec: model.LBSpec{Network: network, Listen: 80, IP: ip}}
	if err := b.Spec.Validate(); err != nil {
		return nil, err
	}
	return r.CreateLB(context.Background(), b, "0a:00:00:00:00:01")
}

// TestLBAddressLifecycle: a balancer and its virtual IP are stored and
// released together; the address is refused to others, keeps the
// network from being deleted, and a failed create leaves nothing.
func TestLBAddressLifecycle(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	mustProject(t, r, "p", model.Quota{})
	if _, err := mkNet(t, r, "p", "lan", "10.1.0.0/29"); err != nil {
		t.Fatal(err)
	}
	b, err := mkLB(r, "web", "lan", "10.1.0.5")
	if err != nil {
		t.Fatal(err)
	}
	if b.Status.VIP != "10.1.0.5" || b.Status.Phase != model.LBPending {
		t.Fatalf("created %+v", b.Status)
	}
	as, _ := r.ListAddresses(ctx, "p", "lan")
	if len(as) != 1 || as[0].Owner != "lb/web" || as[0].MAC != "0a:00:00:00:00:01" {
		t.Fatalf("addresses %+v", as)
	}
	cases := []struct {
		name, lb, net, ip string
		err               error
		field             string
	}{
		{"the same name", "web", "lan", "", ErrExists, ""},
		{"a taken address", "api", "lan", "10.1.0.5", ErrAddressTaken, ""},
		{"the gateway", "api", "lan", "10.1.0.1", nil, "spec.ip"},
		{"outside the subnet", "api", "lan", "10.2.0.1", nil, "spec.ip"},
		{"an unknown network", "api", "wan", "", ErrNotFound, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := mkLB(r, c.lb, c.net, c.ip)
			var fe *model.FieldError
			if c.field != "" && (!errors.As(err, &fe) || fe.Field != c.field) || c.err != nil && !errors.Is(err, c.err) {
				t.Fatalf("got %v", err)
			}
			if as, _ := r.ListAddresses(ctx, "p", "lan"); len(as) != 1 {
				t.Fatalf("a refused create changed the pool: %+v", as)
			}
		})
	}
	if err := r.DeleteNetwork(ctx, "p", "lan"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "lb/web (10.1.0.5)") {
		t.Fatalf("network delete with a balancer on it: %v", err)
	}
	if err := r.FinishDeleteLB(ctx, "p", "web", "test"); err != nil {
		t.Fatal(err)
	}
	if as, _ := r.ListAddresses(ctx, "p", "lan"); len(as) != 0 {
		t.Fatalf("address not released: %+v", as)
	}
	if err := r.DeleteNetwork(ctx, "p", "lan"); err != nil {
		t.Fatal(err)
	}
}

package state

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Network errors.
var (
	// ErrInUse says an object is still used; the message says by whom.
	ErrInUse = errors.New("state: in use")
	// ErrPoolFull says a network has no free address left.
	ErrPoolFull = errors.New("state: no free address")
	// ErrAddressTaken says a fixed address is allocated already.
	ErrAddressTaken = errors.New("state: address taken")
)

// DecodeNetwork decodes a stored network with its revision.
func DecodeNetwork(kv store.KV) (*model.Network, error) {
	n := &model.Network{}
	if err := decode(kv, n); err != nil {
		return nil, err
	}
	n.Revision = kv.ModRev
	return n, nil
}

func encodeRevless(m *model.Meta, v any) []byte {
	rev := m.Revision
	m.Revision = 0
	b := encode(v)
	m.Revision = rev
	return b
}

// GetNetwork returns one network (ErrNotFound when absent).
func (r *Repo) GetNetwork(ctx context.Context, project, name string) (*model.Network, error) {
	kv, err := r.st.Get(ctx, store.NetworkKey(project, name))
	if err != nil {
		return nil, fmt.Errorf("state: network %s/%s: %w", project, name, err)
	}
	return DecodeNetwork(kv)
}

// ListNetworks returns the networks of a project ("" = all), by name.
func (r *Repo) ListNetworks(ctx context.Context, project string) ([]*model.Network, error) {
	out, _, err := listObj(ctx, r, projectPrefix(store.NetworksPrefix, project), func(v *model.Network, rev int64) { v.Revision = rev })
	return out, err
}

// CreateNetwork stores a validated network with the lowest free VNI, in
// one transaction guarded on the project, the project's subnet index
// (so no two overlapping subnets pass at once), the network key's and
// the VNI key's absence. An overlapping subnet of the same project is
// refused with a *model.FieldError on spec.subnet.
func (r *Repo) CreateNetwork(ctx context.Context, n *model.Network) (*model.Network, error) {
	c := *n
	now := r.now()
	c.UID, c.CreatedAt, c.UpdatedAt, c.Revision, c.DeletedAt = NewID(), now, now, 0, nil
	pfx := c.Spec.Prefix()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		p, err := r.GetProject(ctx, c.Project)
		if err != nil {
			return nil, err
		}
		var idx model.NetIndex
		irev, err := r.get(ctx, store.NetIndexKey(c.Project), &idx, true)
		if err != nil {
			return nil, err
		}
		if _, ok := idx.Subnets[c.Name]; ok {
			return nil, fmt.Errorf("%w: network %s/%s", ErrExists, c.Project, c.Name)
		}
		for _, other := range sortedKeys(idx.Subnets) {
			if op, err := netip.ParsePrefix(idx.Subnets[other]); err == nil && op.Overlaps(pfx) {
				return nil, &model.FieldError{Field: "spec.subnet",
					Message: fmt.Sprintf("%s overlaps %s of network %s in project %s: pick a subnet outside it", pfx, op, other, c.Project)}
			}
		}
		vni, err := r.freeVNI(ctx)
		if err != nil {
			return nil, err
		}
		c.Status.VNI = vni
		if idx.Subnets == nil {
			idx.Subnets = map[string]string{}
		}
		idx.Subnets[c.Name] = pfx.String()
		key := store.NetworkKey(c.Project, c.Name)
		conds := []store.Cond{store.IfRev(store.ProjectKey(c.Project), p.Revision), store.IfRev(store.NetIndexKey(c.Project), irev),
			store.IfAbsent(key), store.IfAbsent(store.VNIKey(vni))}
		ops := []store.Op{store.Put(key, encodeRevless(&c.Meta, &c)), store.Put(store.NetIndexKey(c.Project), encode(idx)),
			store.Put(store.VNIKey(vni), []byte(c.Project+"/"+c.Name)),
			EventOp(model.Event{Time: now, Kind: "network.created", Object: "network/" + c.Project + "/" + c.Name, Project: c.Project,
				Message: fmt.Sprintf("network %s created (%s, VNI %d)", c.Name, pfx, vni)})}
		ok, rev, err := r.txn(ctx, conds, ops)
		if err != nil {
			return nil, err
		}
		if ok {
			c.Revision = rev
			return &c, nil
		}
	}
	return nil, fmt.Errorf("%w: creating network %s/%s", ErrContention, c.Project, c.Name)
}

func (r *Repo) freeVNI(ctx context.Context) (int, error) {
	kvs, _, err := r.st.List(ctx, store.VNIPrefix)
	if err != nil {
		return 0, fmt.Errorf("state: list vnis: %w", err)
	}
	used := make(map[int]bool, len(kvs))
	for _, kv := range kvs {
		if v, err := strconv.Atoi(strings.TrimPrefix(kv.Key, store.VNIPrefix)); err == nil {
			used[v] = true
		}
	}
	for v := 1; v <= model.MaxVNI; v++ {
		if !used[v] {
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: all %d network numbers are taken", ErrPoolFull, model.MaxVNI)
}

// DeleteNetwork deletes a network no address of which is allocated. It
// first marks the network deleting (allocations then refuse), so that
// no address can be taken between the check and the delete; an address
// in use answers ErrInUse naming its owners and unmarks the network.
func (r *Repo) DeleteNetwork(ctx context.Context, project, name string) error {
	key := store.NetworkKey(project, name)
	n, err := r.updateNetwork(ctx, project, name, func(n *model.Network) error {
		t := r.now()
		n.DeletedAt = &t
		return nil
	})
	if err != nil {
		return err
	}
	allocs, err := r.ListAddresses(ctx, project, name)
	if err != nil {
		return err
	}
	if len(allocs) > 0 {
		var owners []string
		for _, a := range allocs {
			owners = append(owners, a.Owner+" ("+a.IP+")")
		}
		if len(owners) > 5 {
			owners = append(owners[:5], fmt.Sprintf("and %d more", len(allocs)-5))
		}
		_, uerr := r.updateNetwork(ctx, project, name, func(n *model.Network) error { n.DeletedAt = nil; return nil })
		return errors.Join(fmt.Errorf("%w: network %s is used by %s", ErrInUse, name, strings.Join(owners, ", ")), uerr)
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
		var idx model.NetIndex
		irev, err := r.get(ctx, store.NetIndexKey(project), &idx, true)
		if err != nil {
			return err
		}
		delete(idx.Subnets, name)
		ops := []store.Op{store.Delete(key), store.Delete(store.VNIKey(n.Status.VNI)), store.Put(store.NetIndexKey(project), encode(idx)),
			EventOp(model.Event{Time: r.now(), Kind: "network.deleted", Object: "network/" + project + "/" + name, Project: project,
				Message: "network " + name + " deleted"})}
		ok, _, err := r.txn(ctx, []store.Cond{store.IfRev(key, n.Revision), store.IfRev(store.NetIndexKey(project), irev)}, ops)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if n, err = r.GetNetwork(ctx, project, name); err != nil {
			return err
		}
	}
	return fmt.Errorf("%w: deleting network %s/%s", ErrContention, project, name)
}

func (r *Repo) updateNetwork(ctx context.Context, project, name string, fn func(*model.Network) error) (*model.Network, error) {
	key := store.NetworkKey(project, name)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return nil, err
		}
		n, err := r.GetNetwork(ctx, project, name)
		if err != nil {
			return nil, err
		}
		if err := fn(n); err != nil {
			return nil, err
		}
		n.UpdatedAt = r.now()
		ok, rev, err := r.txn(ctx, []store.Cond{store.IfRev(key, n.Revision)}, []store.Op{store.Put(key, encodeRevless(&n.Meta, n))})
		if err != nil {
			return nil, err
		}
		if ok {
			n.Revision = rev
			return n, nil
		}
	}
	return nil, fmt.Errorf("%w: network %s/%s", ErrContention, project, name)
}

// ListAddresses returns a network's allocated addresses in key order.
func (r *Repo) ListAddresses(ctx context.Context, project, network string) ([]model.AddressAlloc, error) {
	kvs, _, err := r.st.List(ctx, store.AddressPrefix(project, network))
	if err != nil {
		return nil, fmt.Errorf("state: list addresses: %w", err)
	}
	out := make([]model.AddressAlloc, 0, len(kvs))
	for _, kv := range kvs {
		var a model.AddressAlloc
		if err := decode(kv, &a); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// AllocateAddress takes one address of a network for owner: fixed when
// given (ErrAddressTaken when another owner has it; the same owner gets
// it back), else a free one picked from a random start, so that many
// allocators at once rarely pick the same. Each take is a transaction
// that needs the address key absent and the network unchanged (not being
// deleted); a lost race retries. ErrPoolFull when none is free.
func (r *Repo) AllocateAddress(ctx context.Context, project, network, owner, mac, fixed string) (model.AddressAlloc, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if err := backoff(ctx, attempt); err != nil {
			return model.AddressAlloc{}, err
		}
		n, err := r.GetNetwork(ctx, project, network)
		if err != nil {
			return model.AddressAlloc{}, err
		}
		if n.DeletedAt != nil {
			return model.AddressAlloc{}, fmt.Errorf("%w: network %s is being deleted", ErrInUse, network)
		}
		used, err := r.ListAddresses(ctx, project, network)
		if err != nil {
			return model.AddressAlloc{}, err
		}
		taken := make(map[netip.Addr]string, len(used))
		for _, a := range used {
			if ip, err := netip.ParseAddr(a.IP); err == nil {
				taken[ip] = a.Owner
			}
		}
		pfx := n.Spec.Prefix()
		gw, _ := netip.ParseAddr(n.Spec.Gateway)
		var ip netip.Addr
		if fixed != "" {
			if err := model.ValidHostAddress("ip", pfx, fixed); err != nil {
				return model.AddressAlloc{}, err
			}
			ip = netip.MustParseAddr(fixed)
			if ip == gw {
				return model.AddressAlloc{}, &model.FieldError{Field: "ip", Message: fmt.Sprintf("%s is the gateway of network %s", fixed, network)}
			}
			if o, ok := taken[ip]; ok {
				if o == owner {
					return model.AddressAlloc{Network: network, IP: fixed, Owner: owner, MAC: mac}, nil
				}
				return model.AddressAlloc{}, fmt.Errorf("%w: %s on network %s is used by %s", ErrAddressTaken, fixed, network, o)
			}
		} else if ip = pickFree(pfx, gw, taken); !ip.IsValid() {
			return model.AddressAlloc{}, fmt.Errorf("%w: network %s (%s) has no free address", ErrPoolFull, network, pfx)
		}
		a := model.AddressAlloc{Network: network, IP: ip.String(), Owner: owner, MAC: mac, CreatedAt: r.now()}
		key := store.AddressKey(project, network, a.IP)
		ok, _, err := r.txn(ctx, []store.Cond{store.IfAbsent(key), store.IfRev(store.NetworkKey(project, network), n.Revision)},
			[]store.Op{store.Put(key, encode(a))})
		if err != nil {
			return model.AddressAlloc{}, err
		}
		if ok {
			return a, nil
		}
	}
	return model.AddressAlloc{}, fmt.Errorf("%w: allocating an address on network %s/%s", ErrContention, project, network)
}

// pickFree returns a free host address of p (not the gateway), scanning
// from a random start; the zero Addr when none is free.
func pickFree(p netip.Prefix, gw netip.Addr, taken map[netip.Addr]string) netip.Addr {
	hosts := uint64(1)<<(32-p.Bits()) - 2
	base := p.Masked().Addr().As4()
	b := uint64(base[0])<<24 | uint64(base[1])<<16 | uint64(base[2])<<8 | uint64(base[3])
	start := mrand.Uint64N(hosts)
	for i := uint64(0); i < hosts; i++ {
		v := b + 1 + (start+i)%hosts
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if a == gw {
			continue
		}
		if _, ok := taken[a]; !ok {
			return a
		}
	}
	return netip.Addr{}
}

// ReleaseAddress frees an address if owner holds it (any owner when
// owner is ""). Releasing a free address is not an error.
func (r *Repo) ReleaseAddress(ctx context.Context, project, network, ip, owner string) error {
	key := store.AddressKey(project, network, ip)
	kv, err := r.st.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state: address %s: %w", ip, err)
	}
	var a model.AddressAlloc
	if err := decode(kv, &a); err != nil {
		return err
	}
	if owner != "" && a.Owner != owner {
		return fmt.Errorf("%w: %s on network %s is used by %s", ErrAddressTaken, ip, network, a.Owner)
	}
	_, _, err = r.txn(ctx, []store.Cond{store.IfRev(key, kv.ModRev)}, []store.Op{store.Delete(key)})
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	k := make([]string, 0, len(m))
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}

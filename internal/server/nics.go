package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// randomMAC returns a locally administered unicast MAC (0a:...), 40
// random bits: collisions within a network are negligible, and it never
// meets the gateways' 02:76:70:... or QEMU's 52:54:00:....
func randomMAC() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("0a:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4])
}

// checkNICs checks that the networks and security groups the NICs of vm
// name exist in its project (prefix names the request's field, e.g.
// "vms[2]."). It fills in MACs.
func (s *Server) checkNICs(ctx context.Context, vm *model.VM, prefix string, from int) error {
	for i := from; i < len(vm.Spec.NICs); i++ {
		nic := &vm.Spec.NICs[i]
		if nic.Network == "" {
			continue
		}
		f := fmt.Sprintf("%sspec.nics[%d]", prefix, i)
		n, err := s.repo.GetNetwork(ctx, vm.Project, nic.Network)
		if errors.Is(err, store.ErrNotFound) {
			// Not a vpool network: a host network (a bridge the hosts
			// name with vpool agent --network), as before networks
			// existed. It has no addresses, groups or limits.
			if nic.IP != "" || len(nic.SecurityGroups) > 0 || nic.QoS != nil {
				return fieldError(f+".network", "network %q does not exist in project %s: addresses, security groups and rate limits need one (vpool network create)", nic.Network, vm.Project)
			}
			continue
		}
		if err != nil {
			return err
		}
		if n.DeletedAt != nil {
			return errf(http.StatusConflict, api.CodeConflict, f+".network", "network %q is being deleted", nic.Network)
		}
		if nic.IP != "" {
			if err := model.ValidHostAddress(f+".ip", n.Spec.Prefix(), nic.IP); err != nil {
				return err
			}
		}
		for j, g := range nic.SecurityGroups {
			if _, err := s.repo.GetSecurityGroup(ctx, vm.Project, g); errors.Is(err, store.ErrNotFound) {
				return fieldError(fmt.Sprintf("%s.securityGroups[%d]", f, j), "security group %q does not exist in project %s", g, vm.Project)
			} else if err != nil {
				return err
			}
		}
		if nic.MAC == "" {
			nic.MAC = randomMAC()
		}
	}
	return nil
}

// allocateNICs gives every NIC of vm from index from on a network its
// address (the fixed one it asks for, or a free one) and returns a
// function that releases them again, for when the VM is not stored
// after all. A failed allocation releases what it took.
func (s *Server) allocateNICs(ctx context.Context, vm *model.VM, prefix string, from int) (func(), error) {
	type taken struct{ network, ip, owner string }
	var got []taken
	release := func() {
		for _, t := range got {
			if err := s.repo.ReleaseAddress(context.WithoutCancel(ctx), vm.Project, t.network, t.ip, t.owner); err != nil {
				s.log.Warn("releasing an address of a VM that was not created", "ip", t.ip, "err", err)
			}
		}
	}
	for i := from; i < len(vm.Spec.NICs); i++ {
		nic := &vm.Spec.NICs[i]
		if nic.Network == "" {
			continue
		}
		owner := model.NICOwner(vm.Name, nic.Name)
		if _, err := s.repo.GetNetwork(ctx, vm.Project, nic.Network); errors.Is(err, store.ErrNotFound) {
			continue // a host network
		}
		a, err := s.repo.AllocateAddress(ctx, vm.Project, nic.Network, owner, nic.MAC, nic.IP)
		if err != nil {
			release()
			return nil, netErr(err, fmt.Sprintf("%sspec.nics[%d].%s", prefix, i, map[bool]string{true: "ip", false: "network"}[nic.IP != ""]))
		}
		nic.IP = a.IP
		got = append(got, taken{nic.Network, a.IP, owner})
	}
	return release, nil
}

// attachVMs checks and allocates the NICs of VMs about to be created;
// the returned release undoes the allocations.
func (s *Server) attachVMs(ctx context.Context, vms []*model.VM, prefixes []string, dryRun bool) (func(), error) {
	var releases []func()
	undo := func() {
		for _, r := range releases {
			r()
		}
	}
	for i, vm := range vms {
		// The VMs of a batch may share one spec's NIC slice: each gets
		// its own, with its own MAC and address.
		vm.Spec.NICs = slices.Clone(vm.Spec.NICs)
		if err := s.checkNICs(ctx, vm, prefixes[i], 0); err != nil {
			undo()
			return nil, err
		}
		if dryRun {
			continue
		}
		rel, err := s.allocateNICs(ctx, vm, prefixes[i], 0)
		if err != nil {
			undo()
			return nil, err
		}
		releases = append(releases, rel)
	}
	return undo, nil
}

func freeNICName(nics []model.NIC) string {
	for i := 0; ; i++ {
		name := fmt.Sprintf("nic%d", i)
		if !slices.ContainsFunc(nics, func(n model.NIC) bool { return n.Name == name }) {
			return name
		}
	}
}

func (s *Server) addNIC(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var nic model.NIC
	if he := decodeJSON(w, r, &nic); he != nil {
		return he
	}
	name := r.PathValue("name")
	cur, err := s.repo.GetVM(r.Context(), project, name)
	if err != nil {
		return vmNotFound(err, project, name)
	}
	if nic.Name == "" {
		nic.Name = freeNICName(cur.Spec.NICs)
	}
	probe := &model.VM{Meta: cur.Meta, Spec: cur.Spec}
	probe.Spec.NICs = append(append([]model.NIC(nil), cur.Spec.NICs...), nic)
	idx := len(probe.Spec.NICs) - 1
	if err := probe.Spec.Validate(); err != nil {
		return err
	}
	if err := s.checkNICs(r.Context(), probe, "", idx); err != nil {
		return err
	}
	release, err := s.allocateNICs(r.Context(), probe, "", idx)
	if err != nil {
		return err
	}
	added := probe.Spec.NICs[idx]
	vm, _, _, err := s.updateVM(r, p, func(v *model.VM) error {
		if v.Status.Migration != "" {
			return conflict("VM %q is migrating; add the NIC when it has moved", v.Name)
		}
		if slices.ContainsFunc(v.Spec.NICs, func(n model.NIC) bool { return n.Name == added.Name }) {
			return conflict("VM %q already has a NIC named %q", v.Name, added.Name)
		}
		spec := v.Spec
		spec.NICs = append(append([]model.NIC(nil), v.Spec.NICs...), added)
		if err := spec.Validate(); err != nil {
			return err
		}
		v.Spec = spec
		return nil
	})
	if err != nil {
		release()
		return err
	}
	reply(w, http.StatusAccepted, p, vm)
	return nil
}

func (s *Server) patchNIC(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	var req api.NICPatchRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	nicName := r.PathValue("nic")
	if req.SecurityGroups != nil {
		for j, g := range *req.SecurityGroups {
			if _, err := s.repo.GetSecurityGroup(r.Context(), project, g); errors.Is(err, store.ErrNotFound) {
				return fieldError(fmt.Sprintf("securityGroups[%d]", j), "security group %q does not exist in project %s", truncateStr(g, 63), project)
			} else if err != nil {
				return err
			}
		}
	}
	vm, _, _, err := s.updateVM(r, p, func(v *model.VM) error {
		i := slices.IndexFunc(v.Spec.NICs, func(n model.NIC) bool { return n.Name == nicName })
		if i < 0 {
			return notFound("VM %q has no NIC named %q", v.Name, truncateStr(nicName, 63))
		}
		spec := v.Spec
		spec.NICs = append([]model.NIC(nil), v.Spec.NICs...)
		if req.SecurityGroups != nil {
			spec.NICs[i].SecurityGroups = *req.SecurityGroups
		}
		if req.QoS != nil {
			q := *req.QoS
			spec.NICs[i].QoS = &q
			if q == (model.NICQoS{}) {
				spec.NICs[i].QoS = nil
			}
		}
		if err := spec.Validate(); err != nil {
			var fe *model.FieldError
			if errors.As(err, &fe) {
				return fieldError(strings.TrimPrefix(fe.Field, fmt.Sprintf("spec.nics[%d].", i)), "%s", fe.Message)
			}
			return err
		}
		v.Spec = spec
		return nil
	})
	if err != nil {
		return err
	}
	reply(w, http.StatusAccepted, p, vm)
	return nil
}

func (s *Server) removeNIC(w http.ResponseWriter, r *http.Request, p *principal) error {
	nicName := r.PathValue("nic")
	var gone model.NIC
	vm, project, _, err := s.updateVM(r, p, func(v *model.VM) error {
		if v.Status.Migration != "" {
			return conflict("VM %q is migrating; remove the NIC when it has moved", v.Name)
		}
		i := slices.IndexFunc(v.Spec.NICs, func(n model.NIC) bool { return n.Name == nicName })
		if i < 0 {
			return notFound("VM %q has no NIC named %q", v.Name, truncateStr(nicName, 63))
		}
		gone = v.Spec.NICs[i]
		v.Spec.NICs = slices.Delete(append([]model.NIC(nil), v.Spec.NICs...), i, i+1)
		return nil
	})
	if err != nil {
		return err
	}
	if gone.Network != "" && gone.IP != "" {
		if err := s.repo.ReleaseAddress(r.Context(), project, gone.Network, gone.IP, model.NICOwner(vm.Name, gone.Name)); err != nil {
			s.log.Warn("releasing a removed NIC's address (the sweep will)", "vm", vm.Key(), "err", err)
		}
	}
	reply(w, http.StatusAccepted, p, vm)
	return nil
}

package server

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// Admission checks beyond model validation: the ones that need a
// library the model may not import (SSH key parsing) or the cluster's
// state (which storage pools exist).

// checkSSHKeys parses every cloud-init key with golang.org/x/crypto/ssh,
// which checks the key material itself (an ed25519 key is 32 bytes, an
// ECDSA point lies on its curve, an RSA modulus is in range).
// model.CheckSSHPublicKey has already checked the line's shape: a known
// type, base64 data of that type, no options.
func checkSSHKeys(spec *model.VMSpec, prefix string) error {
	if spec.CloudInit == nil {
		return nil
	}
	for i, k := range spec.CloudInit.SSHKeys {
		field := fmt.Sprintf("%sspec.cloudInit.sshKeys[%d]", prefix, i)
		f := strings.Fields(k)
		if len(f) < 2 {
			return fieldError(field, "is not a public key line")
		}
		blob, err := base64.StdEncoding.DecodeString(f[1])
		if err != nil {
			return fieldError(field, "the key data is not base64")
		}
		pk, err := ssh.ParsePublicKey(blob)
		if err != nil {
			return fieldError(field, "is not a valid %s key: %v", f[0], err)
		}
		if pk.Type() != f[0] {
			return fieldError(field, "says %s but holds a %s key", f[0], pk.Type())
		}
	}
	return nil
}

// storageView is what the registered hosts offer: pool names, tiers and
// the (pool, tier) pairs.
type storageView struct {
	pools, tiers map[string]bool
	pairs        map[[2]string]bool
}

func (s *Server) storageView(ctx context.Context) (storageView, error) {
	v := storageView{pools: map[string]bool{}, tiers: map[string]bool{}, pairs: map[[2]string]bool{}}
	hosts, _, err := s.repo.ListHosts(ctx)
	if err != nil {
		return v, err
	}
	for _, h := range hosts {
		for _, p := range h.Pools {
			v.pools[p.Name], v.tiers[p.Tier], v.pairs[[2]string{p.Name, p.Tier}] = true, true, true
		}
	}
	return v, nil
}

// checkStorage refuses, at admission, a disk whose pool or tier no
// registered host has: the scheduler could never place it, and the VM
// would wait in pending for a host that is not coming. prefix is put in
// front of field names (batch items); a host that is down still counts.
func (s *Server) checkStorage(ctx context.Context, specs []*model.VMSpec, prefixes []string) error {
	var view *storageView
	for n, spec := range specs {
		for i, d := range spec.Disks {
			if d.Pool == "" && d.Tier == "" {
				continue
			}
			if view == nil {
				v, err := s.storageView(ctx)
				if err != nil {
					return err
				}
				view = &v
			}
			field := fmt.Sprintf("%sspec.disks[%d]", prefixes[n], i)
			switch {
			case d.Pool != "" && !view.pools[d.Pool]:
				return fieldError(field+".pool", "no host has a storage pool %q (hosts have: %s); leave pool empty for the default storage", d.Pool, list(view.pools))
			case d.Tier != "" && !view.tiers[d.Tier]:
				return fieldError(field+".tier", "no host has storage of tier %q (hosts have: %s)", d.Tier, list(view.tiers))
			case d.Pool != "" && d.Tier != "" && !view.pairs[[2]string{d.Pool, d.Tier}]:
				return fieldError(field+".tier", "no host has pool %q in tier %q", d.Pool, d.Tier)
			}
		}
	}
	return nil
}

func list(set map[string]bool) string {
	names := make([]string, 0, len(set))
	for n := range set {
		if n != "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	sort.Strings(names)
	if len(names) > 20 {
		names = append(names[:20], "…")
	}
	return strings.Join(names, ", ")
}

// pathParam is the pattern of every path parameter of the user API:
// names of VMs, projects, hosts, snapshots and disks, token and migration
// ids are all DNS labels.
var pathParamRe = regexp.MustCompile(`^\{([a-z]+)\}$`)

// checkPathParams answers 404 for a path parameter that no object can
// carry, before any handler builds a store key from it.
func checkPathParams(route string, r *http.Request) *httpError {
	_, path, _ := strings.Cut(route, " ")
	for _, seg := range strings.Split(path, "/") {
		m := pathParamRe.FindStringSubmatch(seg)
		if m == nil {
			continue
		}
		v := r.PathValue(m[1])
		if m[1] == "ip" { // an address of a network's pool
			if a, err := netip.ParseAddr(v); err == nil && a.Is4() && a.String() == v {
				continue
			}
			return errf(http.StatusNotFound, api.CodeNotFound, "", "no address %s: write an IPv4 address", quoteField(v))
		}
		if model.ValidName(m[1], v) != nil {
			return errf(http.StatusNotFound, api.CodeNotFound, "", "no %s named %s: names are DNS labels", m[1], quoteField(v))
		}
	}
	return nil
}

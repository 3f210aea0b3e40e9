package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/watchcache"
)

// Tenants' cloud-init user data (docs/security.md VP-23). It often holds
// secrets, so:
//   - at rest it is sealed with the servers' seal key (ca-seal.key, as the
//     CA key, the audit signing key and backup repository keys), bound to
//     its purpose and project: the VM record, and every copy of its spec
//     (migrations, backups, a scaling group's template), carry
//     CloudInit.UserDataSealed, never the document;
//   - it is write-only: a client sends UserData, answers show its size and
//     a keyed digest (pki.KeyedDigest) — to admins too — and never the
//     document or its sealed copy (withoutUserData, stripRawUserData);
//   - it is opened only for the host that runs the VM (its assignments and
//     status answers), the target of its migration and the host that backs
//     it up (so that a repository restores into another cluster); every
//     one of those answers is already limited to that host;
//   - records an older server stored in clear are sealed in place
//     (sealStoredUserData), at start and whenever one shows up.

// userDataPurpose binds sealed user data and its digests to what they are.
const userDataPurpose = "vpool cloud-init user data"

// userDataAD is the additional data user data of project is sealed with:
// a sealed copy cannot be moved to another purpose or another project.
func userDataAD(project string) []byte { return []byte(userDataPurpose + "\x00" + project) }

// Markers of user data in a stored record's JSON. Inside a JSON string a
// quote is always escaped, so these match only keys.
var (
	rawUserData       = []byte(`"userData":`)
	rawUserDataSealed = []byte(`"userDataSealed":`)
)

// errNoSealKey: the server holds no seal key (it cannot happen once the
// CA is loaded; kept for a server built without bootstrap).
var errNoSealKey = errors.New("server: this server holds no seal key")

// sealUserData replaces ci's user data with its sealed copy, digest and
// size, bound to project. field names it in errors.
func (s *Server) sealUserData(project string, ci *model.CloudInit, field string) error {
	if ci == nil || ci.UserData == "" {
		return nil
	}
	key := s.userDataKey
	if key == nil {
		return errf(http.StatusServiceUnavailable, api.CodeUnavailable, field, "cannot be sealed: %v; the VM was not created", errNoSealKey)
	}
	data, err := pki.SealBytes(key, []byte(ci.UserData), userDataAD(project))
	if err != nil {
		return errf(http.StatusServiceUnavailable, api.CodeUnavailable, field, "cannot be sealed with %s: %v; the VM was not created", s.sealKeyWhere(), err)
	}
	dg, err := pki.KeyedDigest(key, userDataPurpose, []byte(ci.UserData))
	if err != nil {
		return errf(http.StatusServiceUnavailable, api.CodeUnavailable, field, "cannot be sealed with %s: %v; the VM was not created", s.sealKeyWhere(), err)
	}
	ci.UserDataSealed = &model.SealedValue{KeyID: pki.SealKeyID(key), Data: data}
	ci.UserDataDigest, ci.UserDataSize, ci.UserData = dg, len(ci.UserData), ""
	return nil
}

// openUserData returns ci's user data in clear: ci's own (a record from
// before sealing, a repository's manifest) or its sealed copy opened for
// project.
func (s *Server) openUserData(project string, ci *model.CloudInit) (string, error) {
	if ci == nil || ci.UserDataSealed == nil {
		if ci == nil {
			return "", nil
		}
		return ci.UserData, nil
	}
	key := s.userDataKey
	if key == nil {
		return "", fmt.Errorf("spec.cloudInit.userData cannot be opened: %w", errNoSealKey)
	}
	b, err := pki.OpenBytes(key, ci.UserDataSealed.Data, userDataAD(project))
	if err != nil {
		if id, mine := ci.UserDataSealed.KeyID, pki.SealKeyID(key); id != "" && id != mine {
			return "", fmt.Errorf("spec.cloudInit.userData was sealed with seal key %s, and this server holds key %s (%s): %w", id, mine, s.sealKeyWhere(), err)
		}
		return "", fmt.Errorf("spec.cloudInit.userData does not open for project %s with %s: %w", project, s.sealKeyWhere(), err)
	}
	return string(b), nil
}

// checkCloudInitInput refuses, in a client's spec, what only the server
// sets. field is the spec's cloudInit (spec.cloudInit, vms[3].spec.cloudInit).
func checkCloudInitInput(ci *model.CloudInit, field string) error {
	if ci == nil {
		return nil
	}
	const why = "is set by the server, never by a request: send the document as userData (a VM's user data is write-only and never shown back)"
	switch {
	case ci.UserDataSealed != nil:
		return fieldError(field+".userDataSealed", "%s", why)
	case ci.UserDataDigest != "":
		return fieldError(field+".userDataDigest", "%s", why)
	case ci.UserDataSize != 0:
		return fieldError(field+".userDataSize", "%s", why)
	}
	return nil
}

// sealSpecs seals the user data of specs of project (a batch's VMs share
// their spec's CloudInit: each document is sealed once). fields name
// each spec's cloudInit in errors.
func (s *Server) sealSpecs(project string, specs []*model.VMSpec, fields []string) error {
	done := map[*model.CloudInit]*model.CloudInit{}
	for i, sp := range specs {
		ci := sp.CloudInit
		if ci == nil || ci.UserData == "" {
			continue
		}
		if c, ok := done[ci]; ok {
			sp.CloudInit = c
			continue
		}
		c := *ci
		if err := s.sealUserData(project, &c, fields[i]+".userData"); err != nil {
			return err
		}
		done[ci], sp.CloudInit = &c, &c
	}
	return nil
}

// resealUserData makes spec's user data sealed for project: a document
// in clear (a repository's manifest) is sealed, a sealed copy of another
// project or key opened and sealed again. A copy that does not open
// (another cluster's key) is an error naming the field: a VM would boot
// without it.
func (s *Server) resealUserData(from, project string, spec *model.VMSpec) error {
	ci := spec.CloudInit
	if ci == nil || (ci.UserDataSealed != nil && from == project && s.userDataKey != nil &&
		ci.UserDataSealed.KeyID == pki.SealKeyID(s.userDataKey)) {
		return nil
	}
	ud, err := s.openUserData(from, ci)
	if err != nil {
		return errf(http.StatusConflict, api.CodeConflict, "spec.cloudInit.userData", "the backup's user data cannot be restored here: %v", err)
	}
	c := *ci
	c.UserData, c.UserDataSealed, c.UserDataDigest, c.UserDataSize = ud, nil, "", 0
	if err := s.sealUserData(project, &c, "spec.cloudInit.userData"); err != nil {
		return err
	}
	spec.CloudInit = &c
	return nil
}

// openForHost gives spec (a copy the caller owns; its CloudInit is
// replaced, never changed) its user data in clear, for the host that runs
// the VM of project. It fails when the sealed copy does not open: the
// copy then stays sealed and the agent refuses to build a seed without it.
func (s *Server) openForHost(project string, spec *model.VMSpec) error {
	ci := spec.CloudInit
	if ci == nil || ci.UserDataSealed == nil {
		return nil
	}
	ud, err := s.openUserData(project, ci)
	if err != nil {
		return err
	}
	c := *ci
	c.UserData, c.UserDataSealed = ud, nil
	spec.CloudInit = &c
	return nil
}

// hostVMJSON is raw (a VM record of host's, its revision spliced in) with
// its user data opened for the host. Records without sealed user data
// (nearly all) are returned as they are, without decoding.
func (s *Server) hostVMJSON(host string, raw []byte) []byte {
	if !bytes.Contains(raw, rawUserDataSealed) {
		return raw
	}
	var vm model.VM
	if err := json.Unmarshal(raw, &vm); err != nil {
		s.log.Error("a stored VM does not decode", "host", host, "err", err)
		return raw
	}
	if err := s.openForHost(vm.Project, &vm.Spec); err != nil {
		s.log.Error("the VM's user data does not open: its host gets it sealed and will not start it", "vm", vm.Key(), "host", host, "err", err)
		return raw
	}
	b, err := json.Marshal(&vm)
	if err != nil {
		return raw
	}
	return b
}

// publicSpec removes from spec (a copy the caller owns) the user data in
// clear and its sealed copy, keeping its size and digest: what answers
// show. Its CloudInit is replaced, never changed.
func publicSpec(spec *model.VMSpec) {
	ci := spec.CloudInit
	if ci == nil || (ci.UserData == "" && ci.UserDataSealed == nil) {
		return
	}
	c := *ci
	if c.UserData != "" { // a record stored before sealing
		c.UserDataSize = len(c.UserData)
	}
	c.UserData, c.UserDataSealed = "", nil
	spec.CloudInit = &c
}

// withoutUserData returns v, an answer of the API, with every VM spec in
// it public (publicSpec): for every caller, admins included.
func withoutUserData(v any) any {
	switch t := v.(type) {
	case *model.VM:
		c := *t
		publicSpec(&c.Spec)
		return &c
	case model.VM:
		publicSpec(&t.Spec)
		return t
	case api.VMBatchResponse:
		out := api.VMBatchResponse{VMs: make([]model.VM, len(t.VMs))}
		for i, vm := range t.VMs {
			publicSpec(&vm.Spec)
			out.VMs[i] = vm
		}
		return out
	case api.VMList:
		out := t
		out.Items = make([]model.VM, len(t.Items))
		for i, vm := range t.Items {
			publicSpec(&vm.Spec)
			out.Items[i] = vm
		}
		return out
	case *model.Migration:
		c := *t
		publicSpec(&c.Spec)
		return &c
	case model.Migration:
		publicSpec(&t.Spec)
		return t
	case api.MigrationList:
		out := api.MigrationList{Items: make([]model.Migration, len(t.Items))}
		for i, m := range t.Items {
			publicSpec(&m.Spec)
			out.Items[i] = m
		}
		return out
	case *model.Backup:
		c := *t
		publicSpec(&c.Spec)
		return &c
	case model.Backup:
		publicSpec(&t.Spec)
		return t
	case api.BackupList:
		out := api.BackupList{Items: make([]model.Backup, len(t.Items))}
		for i, b := range t.Items {
			publicSpec(&b.Spec)
			out.Items[i] = b
		}
		return out
	case *model.ScalingGroup:
		c := *t
		publicSpec(&c.Spec.Template)
		return &c
	case api.GroupList:
		out := api.GroupList{Groups: make([]model.ScalingGroup, len(t.Groups))}
		for i, g := range t.Groups {
			publicSpec(&g.Spec.Template)
			out.Groups[i] = g
		}
		return out
	}
	return v
}

// stripRawUserData is raw, a stored VM's JSON, as answers show it: the
// sealed copy cut out where it stands (no decoding: lists stream stored
// bytes), a record from before sealing decoded and made public.
func stripRawUserData(raw []byte) []byte {
	plain := bytes.Contains(raw, rawUserData)
	if !plain && !bytes.Contains(raw, rawUserDataSealed) {
		return raw
	}
	if !plain {
		if out, ok := cutSealed(raw); ok {
			return out
		}
	}
	var vm model.VM
	if err := json.Unmarshal(raw, &vm); err != nil {
		return raw
	}
	publicSpec(&vm.Spec)
	b, err := json.Marshal(&vm)
	if err != nil {
		return raw
	}
	return b
}

// cutSealed removes the member "userDataSealed":{...} (and the comma that
// joins it to the others) from raw. A sealed value holds only a hex key
// id and base64, so its object ends at the first '}'. false: raw is not
// shaped so (the caller decodes instead).
func cutSealed(raw []byte) ([]byte, bool) {
	i := bytes.Index(raw, rawUserDataSealed)
	if i < 0 || bytes.Count(raw, rawUserDataSealed) != 1 {
		return raw, false
	}
	j := i + len(rawUserDataSealed)
	if j >= len(raw) || raw[j] != '{' {
		return raw, false
	}
	end := bytes.IndexByte(raw[j:], '}')
	if end < 0 {
		return raw, false
	}
	end += j + 1
	switch {
	case i > 0 && raw[i-1] == ',':
		i--
	case end < len(raw) && raw[end] == ',':
		end++
	}
	out := make([]byte, 0, len(raw)-(end-i))
	out = append(append(out, raw[:i]...), raw[end:]...)
	return out, true
}

// udKind is a stored kind whose records carry a VM spec.
type udKind struct {
	prefix string
	// decode returns the record, its Meta and its spec
	decode func(raw []byte) (any, *model.Meta, *model.VMSpec, error)
	// cached: the view holds the kind (VMs, migrations): read from it
	// rather than listing the store (100,000 VMs at every start)
	cached func(*view) *watchcache.Table
}

func decodeUD[T any](meta func(*T) *model.Meta, spec func(*T) *model.VMSpec) func([]byte) (any, *model.Meta, *model.VMSpec, error) {
	return func(raw []byte) (any, *model.Meta, *model.VMSpec, error) {
		v := new(T)
		if err := json.Unmarshal(raw, v); err != nil {
			return nil, nil, nil, err
		}
		return v, meta(v), spec(v), nil
	}
}

// udKinds are the kinds sealStoredUserData looks through.
var udKinds = []udKind{
	{store.VMsPrefix, decodeUD(func(v *model.VM) *model.Meta { return &v.Meta }, func(v *model.VM) *model.VMSpec { return &v.Spec }),
		func(v *view) *watchcache.Table { return v.vms }},
	{store.MigrationsPrefix, decodeUD(func(m *model.Migration) *model.Meta { return &m.Meta }, func(m *model.Migration) *model.VMSpec { return &m.Spec }),
		func(v *view) *watchcache.Table { return v.migrations }},
	{store.BackupsPrefix, decodeUD(func(b *model.Backup) *model.Meta { return &b.Meta }, func(b *model.Backup) *model.VMSpec { return &b.Spec }), nil},
	{store.GroupsPrefix, decodeUD(func(g *model.ScalingGroup) *model.Meta { return &g.Meta }, func(g *model.ScalingGroup) *model.VMSpec { return &g.Spec.Template }), nil},
}

// plainRecords returns the records of k that hold user data in clear.
func (s *Server) plainRecords(ctx context.Context, k udKind) ([]store.KV, error) {
	if k.cached == nil {
		kvs, _, err := s.cfg.Store.List(ctx, k.prefix)
		if err != nil {
			return nil, err
		}
		out := kvs[:0]
		for _, kv := range kvs {
			if bytes.Contains(kv.Value, rawUserData) {
				out = append(out, kv)
			}
		}
		return out, nil
	}
	if err := s.view.c.WaitSynced(ctx); err != nil {
		return nil, err
	}
	var out []store.KV
	t := k.cached(s.view)
	s.view.c.Read(func(int64) {
		t.Each(k.prefix, "", func(it *watchcache.Item) bool {
			if bytes.Contains(it.Value, rawUserData) {
				out = append(out, store.KV{Key: it.Key, Value: it.Value, ModRev: it.ModRev})
			}
			return true
		})
	})
	return out, nil
}

// sealStoredUserData seals, in place, the user data that records of the
// store hold in clear (written by a server from before sealing): each
// record is rewritten in a transaction guarded on the revision read, so
// a concurrent write wins and the record is looked at again next time.
// It returns how many records it sealed.
func (s *Server) sealStoredUserData(ctx context.Context) (int, error) {
	n := 0
	for _, k := range udKinds {
		kvs, err := s.plainRecords(ctx, k)
		if err != nil {
			return n, fmt.Errorf("server: seal stored user data: %w", err)
		}
		for _, kv := range kvs {
			obj, meta, spec, err := k.decode(kv.Value)
			if err != nil || spec.CloudInit == nil || spec.CloudInit.UserData == "" || spec.CloudInit.UserDataSealed != nil {
				continue
			}
			c := *spec.CloudInit
			if err := s.sealUserData(meta.Project, &c, "spec.cloudInit.userData"); err != nil {
				return n, fmt.Errorf("server: seal the user data of %s: %w", kv.Key, err)
			}
			spec.CloudInit, meta.Revision = &c, 0
			b, err := json.Marshal(obj)
			if err != nil {
				return n, fmt.Errorf("server: seal the user data of %s: %w", kv.Key, err)
			}
			ok, _, err := s.cfg.Store.Txn(ctx, []store.Cond{store.IfRev(kv.Key, kv.ModRev)}, []store.Op{store.Put(kv.Key, b)})
			if err != nil {
				return n, fmt.Errorf("server: seal the user data of %s: %w", kv.Key, err)
			}
			if ok {
				n++
			}
		}
	}
	return n, nil
}

// runUserDataSealer seals stored user data at start, then whenever the
// view sees a VM record with user data in clear (a server from before
// sealing still running in the cluster), at most once a second.
func (s *Server) runUserDataSealer(ctx context.Context) {
	for {
		n, err := s.sealStoredUserData(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Error("sealing stored user data", "err", err)
		case n > 0:
			s.log.Warn("user data stored in clear (by a server from before sealing) is now sealed; whoever could read the store before may hold a copy",
				"records", n, "sealKey", pki.SealKeyID(s.userDataKey))
		}
		select {
		case <-ctx.Done():
			return
		case <-s.view.plainUserData:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

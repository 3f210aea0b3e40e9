package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// What a tenant (any token but a cluster admin's) is shown. Two rules:
//
//  1. Host-internal detail never reaches a tenant. Text that agents
//     report (a VM's last error and message, a snapshot's error, a
//     migration's errors and notes, the events built from them) may hold
//     a QEMU command line, host paths or addresses: redact() withholds
//     those. A migration's target address carries the control channel's
//     key and is never shown.
//  2. A tenant sees its own project's figures only: a host shows the
//     VMs and allocation of the caller's project on it, without its
//     measured load, address, versions or drain; /cluster counts the
//     project's VMs.
//
// reply applies both to whatever a handler answers, by type.

// reply writes v as JSON, redacted for p unless p is a cluster admin.
func reply(w http.ResponseWriter, status int, p *principal, v any) {
	v = withoutUserData(v) // write-only, for every caller (userdata.go)
	if p != nil && !p.clusterAdmin() {
		v = forTenant(v)
	}
	writeJSON(w, status, v)
}

// forTenant returns v with host-internal detail removed. Types that
// carry none are returned as they are.
func forTenant(v any) any {
	switch t := v.(type) {
	case *model.VM:
		c := *t
		tenantVM(&c)
		return &c
	case model.VM:
		tenantVM(&t)
		return t
	case api.VMBatchResponse:
		out := api.VMBatchResponse{VMs: make([]model.VM, len(t.VMs))}
		for i, vm := range t.VMs {
			tenantVM(&vm)
			out.VMs[i] = vm
		}
		return out
	case *model.Snapshot:
		c := *t
		c.Error = redact(c.Error)
		return &c
	case api.SnapshotList:
		out := api.SnapshotList{Items: make([]model.Snapshot, len(t.Items))}
		for i, sn := range t.Items {
			sn.Error = redact(sn.Error)
			out.Items[i] = sn
		}
		return out
	case *model.Migration:
		c := *t
		tenantMigration(&c)
		return &c
	case api.MigrationList:
		out := api.MigrationList{Items: make([]model.Migration, len(t.Items))}
		for i, m := range t.Items {
			tenantMigration(&m)
			out.Items[i] = m
		}
		return out
	case api.EventList:
		out := api.EventList{Items: make([]model.Event, len(t.Items))}
		for i, e := range t.Items {
			e.Message = redact(e.Message)
			out.Items[i] = e
		}
		return out
	case model.Event:
		t.Message = redact(t.Message)
		return t
	case api.AuditList:
		out := api.AuditList{Head: t.Head, Items: make([]model.AuditRecord, len(t.Items))}
		for i, r := range t.Items {
			r.Reason = redact(r.Reason)
			out.Items[i] = r
		}
		return out
	case *model.Image:
		c := *t
		tenantImage(&c)
		return &c
	case api.ImageList:
		out := api.ImageList{Items: make([]model.Image, len(t.Items))}
		for i, im := range t.Items {
			tenantImage(&im)
			out.Items[i] = im
		}
		return out
	case *model.LoadBalancer, api.LBList:
		return forTenantLB(v)
	case *model.Backup, api.BackupList, *model.Restore, api.RestoreList:
		return forTenantBackup(v)
	}
	return v
}

// tenantImage withholds where an image's files live and came from (a
// server's pool directory, an operator's URL) and redacts its error.
func tenantImage(im *model.Image) {
	im.Pool, im.Source = "", ""
	im.Error = redact(im.Error)
}

func tenantVM(v *model.VM) {
	v.Status.LastError = redact(v.Status.LastError)
	v.Status.Message = redact(v.Status.Message)
	if r := v.Status.Resize; r != nil {
		c := *r
		c.Message = redact(c.Message)
		v.Status.Resize = &c
	}
}

// needsRedaction says whether a stored VM record carries text tenantVM
// redacts (the fields it reads); a record without it is shown as stored.
func needsRedaction(b []byte) bool {
	return bytes.Contains(b, []byte(`"lastError"`)) || bytes.Contains(b, []byte(`"message"`))
}

// tenantRawVMs redacts stored VM records for a tenant. Only records that
// carry agent-reported text are decoded again, so that a listing of
// thousands of healthy VMs stays a copy of the stored bytes.
func tenantRawVMs(items []json.RawMessage) ([]json.RawMessage, error) {
	for i, it := range items {
		if !needsRedaction(it) {
			continue
		}
		var vm model.VM
		if err := json.Unmarshal(it, &vm); err != nil {
			return nil, fmt.Errorf("server: decode VM record: %w", err)
		}
		tenantVM(&vm)
		b, err := json.Marshal(&vm)
		if err != nil {
			return nil, fmt.Errorf("server: encode VM record: %w", err)
		}
		items[i] = b
	}
	return items, nil
}

func tenantMigration(m *model.Migration) {
	m.TargetAddr = ""
	m.Reason, m.Abort = redact(m.Reason), redact(m.Abort)
	m.TargetError, m.SourceError = redact(m.TargetError), redact(m.SourceError)
	m.Progress.Note = redact(m.Progress.Note)
	if r := m.Result; r != nil {
		c := *r
		c.Notes = make([]string, len(r.Notes))
		for i, n := range r.Notes {
			c.Notes[i] = redact(n)
		}
		m.Result = &c
	}
}

// maxTenantText bounds agent-reported text shown to a tenant.
const maxTenantText = 512

var (
	// urlRe: scheme://anything — migration and agent addresses, whose
	// query may hold a key.
	urlRe = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.-]*://[^\s,;'"]*`)
	// pathRe: an absolute path after a separator.
	pathRe = regexp.MustCompile(`(^|[\s=,:;'"(\[<])/[^\s,;'"()\[\]<>]*`)
	// addrRe: an IPv4 address, with its port when there is one.
	addrRe = regexp.MustCompile(`\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b`)
	// optRe: a command-line option, as in "-device virtio-net-pci,...".
	optRe = regexp.MustCompile(`(^|\s)-{1,2}[a-z][a-z0-9-]*(\s|=|$)`)
)

// redact withholds host-internal detail from text an agent reported:
// a line that reads like a command line (two options or more) is
// dropped, URLs, absolute paths and IPv4 addresses are replaced, and the
// text is cut to maxTenantText bytes. What is left still says what went
// wrong ("qemu: QEMU exited during start-up"); the full text is in the
// VM's record, which admins read as is.
func redact(s string) string {
	if s == "" {
		return s
	}
	var kept []string
	withheld := false
	for _, line := range strings.Split(s, "\n") {
		if len(optRe.FindAllStringIndex(line, -1)) >= 2 {
			withheld = true
			if cut := optRe.FindStringIndex(line); cut != nil && cut[0] > 0 {
				kept = append(kept, strings.TrimSpace(line[:cut[0]]))
			}
			continue
		}
		kept = append(kept, line)
	}
	out := strings.Join(kept, "\n")
	out = urlRe.ReplaceAllString(out, "[address]")
	out = pathRe.ReplaceAllString(out, "${1}[path]")
	out = addrRe.ReplaceAllString(out, "[address]")
	if withheld {
		out = strings.TrimSpace(out) + " [command line withheld; an administrator can read the VM's full error]"
	}
	if len(out) > maxTenantText {
		cut := maxTenantText
		for cut > 0 && out[cut]&0xC0 == 0x80 {
			cut--
		}
		out = out[:cut] + "…"
	}
	return out
}

// placement is what one project's VMs take of one host.
type placement struct {
	vms  int
	used model.Resources
}

// projectPlacements sums the VMs of project per host they are placed on.
func (s *Server) projectPlacements(ctx context.Context, project string) (map[string]placement, error) {
	vms, _, err := s.repo.ListVMs(ctx, project)
	if err != nil {
		return nil, err
	}
	out := map[string]placement{}
	for _, v := range vms {
		if v.Status.Host == "" {
			continue
		}
		pl := out[v.Status.Host]
		pl.vms++
		pl.used = pl.used.Add(v.Spec.Demand())
		out[v.Status.Host] = pl
	}
	return out, nil
}

// tenantHost is the view of h a project member gets: what placement
// constraints need (name, labels, state, pools and tiers, networks,
// capacity) and the caller's own VMs on it.
func tenantHost(h *model.Host, mine placement) model.Host {
	out := model.Host{
		Meta:     model.Meta{Name: h.Name, CreatedAt: h.CreatedAt, UpdatedAt: h.UpdatedAt},
		Labels:   h.Labels,
		Capacity: h.Capacity, Ratios: h.Ratios, State: h.State, Cordoned: h.Cordoned,
		Driver: h.Driver, Accel: h.Accel, Networks: h.Networks, LastSeen: h.LastSeen,
		VMs: mine.vms, Allocated: mine.used,
	}
	for _, p := range h.Pools {
		out.Pools = append(out.Pools, model.StoragePoolRef{Name: p.Name, Tier: p.Tier})
	}
	return out
}

package cli

import (
	"net/http"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// vmOpHandlers fake snapshots (pending → ready on the first GET), disks
// and the console log. The interactive console is tested end to end in
// internal/devenv.
func (f *fakeServer) vmOpHandlers() map[string]handler {
	snaps := map[string]*model.Snapshot{}
	notFound := func(name string) *apiErr { return fail(404, api.CodeNotFound, "", "snapshot %q not found", name) }
	return map[string]handler{
		"GET /api/v1/vms/{name}/snapshots": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			out := api.SnapshotList{Items: []model.Snapshot{}}
			for _, s := range snaps {
				out.Items = append(out.Items, *s)
			}
			return out, nil
		},
		"POST /api/v1/vms/{name}/snapshots": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			vm, e := f.vm(r)
			if e != nil {
				return nil, e
			}
			var req api.SnapshotCreateRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			s := &model.Snapshot{Meta: model.Meta{Name: req.Name, Project: vm.Project, CreatedAt: now}, VM: vm.Name,
				Host: vm.Status.Host, Memory: req.Memory, Phase: model.SnapshotPending}
			snaps[req.Name] = s
			w.WriteHeader(http.StatusAccepted)
			return s, nil
		},
		"GET /api/v1/vms/{name}/snapshots/{snapshot}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			s, ok := snaps[r.PathValue("snapshot")]
			if !ok {
				return nil, notFound(r.PathValue("snapshot"))
			}
			switch s.Phase {
			case model.SnapshotPending, model.SnapshotReverting:
				s.Phase = model.SnapshotReady
			case model.SnapshotDeleting:
				delete(snaps, s.Name)
			}
			return s, nil
		},
		"POST /api/v1/vms/{name}/snapshots/{snapshot}/revert": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			s, ok := snaps[r.PathValue("snapshot")]
			if !ok {
				return nil, notFound(r.PathValue("snapshot"))
			}
			s.Phase, s.RevertNonce = model.SnapshotReverting, s.RevertNonce+1
			return s, nil
		},
		"DELETE /api/v1/vms/{name}/snapshots/{snapshot}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			s, ok := snaps[r.PathValue("snapshot")]
			if !ok {
				return nil, notFound(r.PathValue("snapshot"))
			}
			s.Phase = model.SnapshotDeleting
			return s, nil
		},
		"POST /api/v1/vms/{name}/disks": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			vm, e := f.vm(r)
			if e != nil {
				return nil, e
			}
			var req api.DiskAddRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			vm.Spec.Disks = append(vm.Spec.Disks, model.Disk{Name: req.Name, Size: req.Size})
			return vm, nil
		},
		"DELETE /api/v1/vms/{name}/disks/{disk}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			vm, e := f.vm(r)
			if e != nil {
				return nil, e
			}
			var keep []model.Disk
			for _, d := range vm.Spec.Disks {
				if d.Name != r.PathValue("disk") {
					keep = append(keep, d)
				}
			}
			vm.Spec.Disks = keep
			return vm, nil
		},
		// The fake grows the disk at once, as a host would, and reports it.
		"PATCH /api/v1/vms/{name}/disks/{disk}": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			vm, e := f.vm(r)
			if e != nil {
				return nil, e
			}
			var req api.DiskResizeRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			vm.Status.Disks = nil
			for i, d := range vm.Spec.Disks {
				if d.Name == r.PathValue("disk") {
					if req.Size <= d.Size {
						return nil, fail(400, api.CodeInvalidField, "size", "disks only grow")
					}
					vm.Spec.Disks[i].Size = req.Size
				}
				vm.Status.Disks = append(vm.Status.Disks, model.DiskStatus{Name: d.Name, Size: vm.Spec.Disks[i].Size})
			}
			return vm, nil
		},
		"GET /api/v1/vms/{name}/console": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return nil, fail(501, api.CodeUnavailable, "", "the fake has no console")
		},
		"GET /api/v1/vms/{name}/console/log": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			if _, e := f.vm(r); e != nil {
				return nil, e
			}
			return api.ConsoleLog{Log: "booting\nVPOOL-GUEST-READY cpus=2\n"}, nil
		},
	}
}

func TestVMOpCommands(t *testing.T) {
	f := newFake(t)
	seed(f)
	for _, tc := range []struct {
		name string
		args []string
		want string // in stdout
	}{
		{"snapshot create waits until ready", []string{"snapshot", "create", "web1", "s1"}, "ready"},
		{"snapshot list", []string{"snapshot", "list", "web1"}, "s1"},
		{"snapshot revert", []string{"snapshot", "revert", "web1", "s1"}, "reverted to snapshot s1"},
		{"snapshot delete", []string{"snapshot", "delete", "web1", "s1"}, "deleted"},
		{"disk add", []string{"vm", "disk", "add", "web1", "--size", "1GiB", "--name", "extra"}, "extra"},
		{"disk remove", []string{"vm", "disk", "remove", "web1", "extra"}, "root"},
		{"console log", []string{"vm", "console", "web1", "--log"}, "VPOOL-GUEST-READY"},
		{"disk resize waits for the host", []string{"vm", "disk", "resize", "web1", "root", "--size", "20GiB"}, "20GiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := f.cli(t, tc.args...)
			if res.code != 0 || !strings.Contains(res.stdout, tc.want) {
				t.Fatalf("code %d, stdout %q, stderr %q; want %q in stdout", res.code, res.stdout, res.stderr, tc.want)
			}
		})
	}
	if res := f.cli(t, "vm", "disk", "add", "web1"); res.code != 2 || !strings.Contains(res.stderr, "--size is required") {
		t.Errorf("disk add without a size: code %d, stderr %q", res.code, res.stderr)
	}
}

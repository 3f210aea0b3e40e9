package cli

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// migrationHandlers fake the migration and drain endpoints: a migration
// walks pending → transferring (half sent) → completed, one step per GET.
func (f *fakeServer) migrationHandlers() map[string]handler {
	migs := map[string]*model.Migration{}
	steps := map[string]int{}
	return map[string]handler{
		"POST /api/v1/migrations": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.MigrationRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			vm := f.vms[project(r)+"/"+req.VM]
			if vm == nil {
				return nil, fail(404, api.CodeNotFound, "", "VM %s not found", req.VM)
			}
			if req.To == vm.Status.Host {
				return nil, fail(409, api.CodeConflict, "", "migration refused: VM %s is already on %s", vm.Name, req.To)
			}
			to := req.To
			if to == "" {
				to = "h3"
			}
			m := &model.Migration{Meta: model.Meta{Name: "m1", Project: vm.Project, CreatedAt: now.Add(-time.Second)},
				VM: vm.Name, Source: vm.Status.Host, Target: to, Mode: model.MigrationLive, Phase: model.MigrationPending,
				Options: model.MigrationOptions{DowntimeLimitMs: 300}}
			if req.DowntimeLimitMs != nil {
				m.Options.DowntimeLimitMs = *req.DowntimeLimitMs
			}
			if !req.DryRun {
				migs[m.Name] = m
			}
			return m, nil
		},
		"GET /api/v1/migrations": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			out := api.MigrationList{Items: []model.Migration{}}
			for _, m := range migs {
				out.Items = append(out.Items, *m)
			}
			return out, nil
		},
		"GET /api/v1/migrations/{id}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			m := migs[r.PathValue("id")]
			if m == nil {
				return nil, fail(404, api.CodeNotFound, "", "migration not found")
			}
			steps[m.Name]++
			switch {
			case m.Phase.Final():
			case steps[m.Name] == 1:
				m.Phase = model.MigrationTransferring
				m.Progress = model.MigrationProgress{BytesSent: 512 * int64(model.MiB), BytesLeft: 512 * int64(model.MiB),
					BytesTotal: int64(model.GiB), DirtyRate: 8 * int64(model.MiB), ExpectedDowntimeMs: 40, ETASeconds: 2}
			default:
				m.Phase = model.MigrationCompleted
				m.Result = &model.MigrationResult{TotalMs: 1400, DowntimeMs: 21, BytesSent: int64(model.GiB), WallMs: 1900}
				m.SourceCleaned = true
			}
			return m, nil
		},
		"POST /api/v1/migrations/{id}/cancel": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			m := migs[r.PathValue("id")]
			if m == nil {
				return nil, fail(404, api.CodeNotFound, "", "migration not found")
			}
			if m.Phase.Final() {
				return nil, fail(409, api.CodeConflict, "", "migration %s is already %s", m.Name, m.Phase)
			}
			m.CancelRequested, m.Phase, m.Reason = true, model.MigrationCancelled, "cancelled"
			return m, nil
		},
		"POST /api/v1/hosts/{name}/drain": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			h, e := f.host(r)
			if e != nil {
				return nil, e
			}
			var req api.DrainRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			h.State, h.Drain = model.HostMaintenance, &model.HostDrain{MaxConcurrent: req.MaxConcurrent, StartedAt: now}
			return api.DrainResponse{Host: *h,
				Movable: []api.DrainPlanItem{{VM: "default/web1", Mode: model.MigrationLive, Target: "h3"}},
				Blocked: []api.DrainPlanItem{{VM: "team/db1", Reason: "migration refused: cannot move VM db1: no other host fits: missing required labels ssd=true"}}}, nil
		},
		"POST /api/v1/hosts/{name}/undrain": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			h, e := f.host(r)
			if e != nil {
				return nil, e
			}
			h.State, h.Drain = model.HostReady, nil
			return h, nil
		},
	}
}

func TestMigrationCommands(t *testing.T) {
	f := newFake(t)
	seed(f)
	res := f.cli(t, "vm", "migrate", "web1", "--wait", "--downtime-limit", "100ms")
	if res.code != 0 {
		t.Fatalf("migrate --wait: code %d, stderr %s", res.code, res.stderr)
	}
	golden(t, "vm-migrate-wait", res.stdout)
	for _, want := range []string{"transferring", "sent 512MiB", "left 512MiB", "dirty 8MiB/s", "downtime ~40ms", "eta 2s", "completed"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("progress on stderr lacks %q:\n%s", want, res.stderr)
		}
	}
	if w := f.lastWrite(t); !strings.Contains(w.Body, `"downtimeLimitMs":100`) {
		t.Errorf("request body %s does not carry the downtime limit", w.Body)
	}

	res = f.cli(t, "vm", "migrate", "web1", "--to", "h1")
	if res.code != 1 || !strings.Contains(res.stderr, "already on h1") {
		t.Errorf("refusal: code %d, stderr %q", res.code, res.stderr)
	}

	res = f.cli(t, "migration", "list")
	if res.code != 0 {
		t.Fatalf("list: %s", res.stderr)
	}
	golden(t, "migration-list", res.stdout)
	res = f.cli(t, "migration", "show", "m1")
	golden(t, "migration-show", res.stdout)
	if byVM := f.cli(t, "migration", "show", "web1"); byVM.stdout != res.stdout {
		t.Errorf("migration show web1 (the VM's latest) = %q, want m1's:\n%s", byVM.stdout+byVM.stderr, res.stdout)
	}
	res = f.cli(t, "migration", "cancel", "m1")
	if res.code != 1 || !strings.Contains(res.stderr, "already completed") {
		t.Errorf("cancel of a completed migration: code %d, stderr %q", res.code, res.stderr)
	}

	res = f.cli(t, "host", "drain", "h1", "--max-concurrent", "3", "--no-wait")
	if res.code != 0 {
		t.Fatalf("drain: %s", res.stderr)
	}
	golden(t, "host-drain", res.stdout)
	if w := f.lastWrite(t); w.Body != `{"maxConcurrent":3}` {
		t.Errorf("drain body %s", w.Body)
	}
	res = f.cli(t, "host", "undrain", "h1")
	if res.code != 0 || res.stdout != "host h1: ready\n" {
		t.Errorf("undrain: code %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
}

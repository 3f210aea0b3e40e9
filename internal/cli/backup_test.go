package cli

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// backupHandlers fake the backup routes: a backup is running on its
// first GET and completed on the second; requests are recorded.
func (f *fakeServer) backupHandlers() map[string]handler {
	gets := 0
	backup := func() model.Backup {
		return model.Backup{Meta: model.Meta{Name: "b-1", Project: "default", CreatedAt: now}, VM: "web1", Repo: "main",
			Phase: model.BackupPending}
	}
	ok := func(v any) handler {
		return func(http.ResponseWriter, *http.Request, []byte) (any, *apiErr) { return v, nil }
	}
	return map[string]handler{
		"GET /api/v1/backup/repos": ok(api.BackupRepoList{Items: []api.BackupRepoInfo{{Name: "main", Path: "/srv/b", RepoID: "r1", Owner: "c1", KeyID: "k1", ChunkSize: 4 << 20}}}),
		"POST /api/v1/backup/repos": func(_ http.ResponseWriter, _ *http.Request, body []byte) (any, *apiErr) {
			var req api.BackupRepoCreateRequest
			json.Unmarshal(body, &req)
			if !strings.HasPrefix(req.Key, api.BackupKeyPrefix) {
				return nil, fail(400, api.CodeInvalidField, "key", "not a key")
			}
			if req.URL != "" && (req.S3AccessKey != "AK1" || req.S3SecretKey != "SK1") {
				return nil, fail(400, api.CodeInvalidField, "s3SecretKey", "no credentials")
			}
			return api.BackupRepoInfo{Name: req.Name, Path: req.Path, URL: req.URL, RepoID: "r1", Owner: "c1", KeyID: "k1", ChunkSize: 4 << 20, Created: true}, nil
		},
		"GET /api/v1/backup/repos/{name}":         ok(api.BackupRepoInfo{Name: "main"}),
		"DELETE /api/v1/backup/repos/{name}":      ok(nil),
		"GET /api/v1/backup/repos/{name}/catalog": ok(api.Catalog{Items: []api.CatalogEntry{{ID: "b-1", Project: "default", VM: "web1", Kind: "full"}}}),
		"GET /api/v1/backup/policy":               ok(model.BackupPolicy{Repo: "main", Every: "6h"}),
		"PUT /api/v1/backup/policy": func(_ http.ResponseWriter, _ *http.Request, body []byte) (any, *apiErr) {
			var req api.BackupPolicyRequest
			json.Unmarshal(body, &req)
			return req.BackupPolicy, nil
		},
		"GET /api/v1/backups":  ok(api.BackupList{Items: []model.Backup{backup()}}),
		"POST /api/v1/backups": ok(backup()),
		"GET /api/v1/backups/{id}": func(http.ResponseWriter, *http.Request, []byte) (any, *apiErr) {
			gets++
			b := backup()
			b.Phase, b.Progress = model.BackupRunning, model.Progress{Done: 1 << 20, Total: 4 << 20}
			if gets > 1 {
				b.Phase, b.Kind, b.Progress = model.BackupCompleted, "full", model.Progress{Done: 4 << 20, Total: 4 << 20}
				b.Stats = model.BackupStats{ReadBytes: 4 << 20, NewBytes: 1 << 20}
			}
			return b, nil
		},
		"DELETE /api/v1/backups/{id}": ok(nil),
		"POST /api/v1/backups/{id}/restore": ok(model.Restore{Meta: model.Meta{Name: "r-1"}, Backup: "b-1", VM: "web2",
			Phase: model.RestorePending}),
		"GET /api/v1/restores": ok(api.RestoreList{}),
		"GET /api/v1/restores/{id}": ok(model.Restore{Meta: model.Meta{Name: "r-1"}, Backup: "b-1", VM: "web2",
			Phase: model.RestoreCompleted, BytesRestored: 4 << 20, RestoreMs: 120, BootMs: 2400}),
		"GET /api/v1/backup/tasks":  ok(api.BackupTaskList{}),
		"POST /api/v1/backup/tasks": ok(model.BackupTask{Meta: model.Meta{Name: "t-1"}, Kind: "verify", Repo: "main", Phase: model.BackupPending}),
		"GET /api/v1/backup/tasks/{id}": ok(model.BackupTask{Meta: model.Meta{Name: "t-1"}, Kind: "verify", Repo: "main",
			Phase: model.BackupFailed, Problems: []string{"chunk ab12: corrupt (used by b-1, b-2)"}, Error: "verify found 1 problems"}),
		"POST /api/v1/dr/failover": ok(api.FailoverResponse{ID: "f-1", Restores: []model.Restore{{Meta: model.Meta{Name: "r-1"}, VM: "web2"}}}),
	}
}

func TestBackupCommands(t *testing.T) {
	f := newFake(t)
	seed(f)
	keyFile := filepath.Join(t.TempDir(), "backup.key")
	credsFile := filepath.Join(t.TempDir(), "s3.creds")
	os.WriteFile(credsFile, []byte("AK1\nSK1\n"), 0o600)
	const s3URL = "s3://bk/site?endpoint=127.0.0.1:9000&insecure=1"
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // in stdout, or stderr when code != 0
	}{
		{"repo create writes a new key file", []string{"backup", "repo", "create", "main", "--path", "/srv/b", "--key-file", keyFile}, 0, "main"},
		{"repo create reads the existing key file", []string{"backup", "repo", "create", "main", "--path", "/srv/b", "--key-file", keyFile}, 0, "read-write"},
		{"repo create without a key", []string{"backup", "repo", "create", "main", "--path", "/srv/b"}, 2, "VPOOL_BACKUP_KEY"},
		{"repo create on an object store", []string{"backup", "repo", "create", "cloud", "--url", s3URL, "--key-file", keyFile, "--s3-credentials-file", credsFile}, 0, "s3://bk/site"},
		{"repo create on an object store without credentials", []string{"backup", "repo", "create", "cloud", "--url", s3URL, "--key-file", keyFile}, 2, "VPOOL_S3_SECRET_KEY"},
		{"repo create with a path and a URL", []string{"backup", "repo", "create", "cloud", "--url", s3URL, "--path", "/srv/b", "--key-file", keyFile}, 2, "--path DIR or --url"},
		{"repo show lists the catalog", []string{"backup", "repo", "show", "main"}, 0, "b-1"},
		{"create waits until completed", []string{"backup", "create", "web1"}, 0, "completed"},
		{"restore prints the figures", []string{"backup", "restore", "b-1", "--as", "web2", "--boot-check"}, 0, "booted in 2400ms"},
		{"verify names the corrupt chunk and fails", []string{"backup", "verify", "--repo", "main"}, 1, "verify found 1 problems"},
		{"policy set", []string{"backup", "policy", "set", "--repo", "main", "--every", "6h", "--keep-last", "3"}, 0, "last 3"},
		{"failover", []string{"dr", "failover", "--project", "default", "--from", "main"}, 0, "failover f-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := f.cli(t, tc.args...)
			out := res.stdout
			if tc.code != 0 {
				out = res.stderr
			}
			if res.code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("code %d, stdout %q, stderr %q; want code %d and %q", res.code, res.stdout, res.stderr, tc.code, tc.want)
			}
		})
	}
	st, err := os.Stat(keyFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, st.Mode())
	}
	for _, c := range f.calls {
		if strings.Contains(strings.Join(strings.Fields(c.Query), ""), "key") {
			t.Fatalf("the key went into a query: %+v", c)
		}
	}
}

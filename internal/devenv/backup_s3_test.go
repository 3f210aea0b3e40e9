package devenv_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// TestBackupToObjectStore: a repository in an S3 bucket, served on
// loopback by gofakes3 (an S3 API server in Go; the requests are real
// HTTP with AWS signature v4 from minio-go). Cluster A's host backs a VM
// up into it (full, then incremental) and the leader verifies it; the
// credentials are sealed in the store and never shown; cluster B
// registers the same bucket prefix (read-only: A owns it) and fails the
// project over from it, byte for byte.
func TestBackupToObjectStore(t *testing.T) {
	ctx := context.Background()
	s3 := httptest.NewServer(gofakes3.New(s3mem.New(), gofakes3.WithoutVersioning()).Server())
	t.Cleanup(s3.Close)
	url := "s3://vpool-dr/site-a?endpoint=" + strings.TrimPrefix(s3.URL, "http://") + "&insecure=1"
	const access, secret = "site-a-access", "s3cr3t-never-shown"
	stA, stB := memstore.New(), memstore.New()
	t.Cleanup(func() { stA.Close(); stB.Close() })
	fast := controller.BackupConfig{Interval: 100 * time.Millisecond}
	a := startCluster(t, devenv.ServerConfig{Store: stA, Backup: fast}, 1)
	b := startCluster(t, devenv.ServerConfig{Store: stB, Backup: fast}, 1)
	key := backupKey()
	p := api.DefaultProject

	for _, tc := range []struct {
		name  string
		req   api.BackupRepoCreateRequest
		field string
	}{
		{"no credentials", api.BackupRepoCreateRequest{Name: "cloud", URL: url, Key: key}, "s3SecretKey"},
		{"a path and a URL", api.BackupRepoCreateRequest{Name: "cloud", URL: url, Path: "/srv/x", Key: key, S3AccessKey: access, S3SecretKey: secret}, "url"},
		{"credentials in the URL", api.BackupRepoCreateRequest{Name: "cloud", URL: "s3://k:" + secret + "@vpool-dr/x?endpoint=127.0.0.1:1", Key: key,
			S3AccessKey: access, S3SecretKey: secret}, "url"},
	} {
		_, err := a.c.CreateBackupRepo(ctx, tc.req)
		var ae *api.Error
		if !errors.As(err, &ae) || ae.Code != api.CodeInvalidField || ae.Field != tc.field || strings.Contains(err.Error(), secret) {
			t.Fatalf("%s: %v, want an invalid %s that does not show the secret", tc.name, err, tc.field)
		}
	}
	cloud, err := a.c.CreateBackupRepo(ctx, api.BackupRepoCreateRequest{Name: "cloud", URL: url, Key: key, S3AccessKey: access, S3SecretKey: secret})
	if err != nil || !cloud.Created || cloud.ReadOnly || cloud.URL != url {
		t.Fatalf("create cloud: %+v %v", cloud, err)
	}
	raw, err := stA.Get(ctx, store.BackupRepoKey("cloud"))
	if err != nil || bytes.Contains(raw.Value, []byte(secret)) || bytes.Contains(raw.Value, []byte(access)) {
		t.Fatalf("the stored record holds the credentials in clear (%v)", err)
	}

	const size = 32 << 20
	if _, err := a.c.CreateVM(ctx, p, api.VMCreateRequest{Name: "db1", Spec: model.VMSpec{VCPUs: 1, Memory: 256 * model.MiB,
		Disks: []model.Disk{{Name: "root", Size: size}}}}); err != nil {
		t.Fatal(err)
	}
	a.waitPhase("db1", model.PhaseRunning)
	h := a.hosts["h1"]
	write := func(off int64, n int) {
		buf := make([]byte, n)
		rand.Read(buf)
		if err := h.Driver().WriteDisk(ctx, p+".db1", "root", off, buf); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 6<<20)
	b1, err := a.c.CreateBackup(ctx, p, api.BackupCreateRequest{VM: "db1", Repo: "cloud"})
	if err != nil {
		t.Fatal(err)
	}
	b1 = waitBackup(t, a.c, p, b1.Name)
	write(12<<20, 1<<20)
	b2, err := a.c.CreateBackup(ctx, p, api.BackupCreateRequest{VM: "db1", Repo: "cloud"})
	if err != nil {
		t.Fatal(err)
	}
	b2 = waitBackup(t, a.c, p, b2.Name)
	if b1.Kind != "full" || b2.Kind != "incremental" || b2.Stats.ReadBytes > 2<<20 {
		t.Fatalf("backups into the object store: %s then %s reading %d bytes for 1 MiB changed", b1.Kind, b2.Kind, b2.Stats.ReadBytes)
	}
	want := simImage(t, h, p+".db1", size)
	tk, err := a.c.CreateBackupTask(ctx, api.BackupTaskRequest{Kind: "verify", Repo: "cloud"})
	if err != nil {
		t.Fatal(err)
	}
	if tk = waitTask(t, a.c, tk.Name); tk.Phase != model.BackupCompleted {
		t.Fatalf("verify of the object store: %+v", tk)
	}

	// What the API shows: the URL to admins, never a credential.
	for _, c := range []*client.Client{a.c} {
		got, err := c.GetBackupRepo(ctx, "cloud")
		js, _ := json.Marshal(got)
		if err != nil || bytes.Contains(js, []byte(secret)) || bytes.Contains(js, []byte(access)) {
			t.Fatalf("GET repo: %s %v", js, err)
		}
	}

	// Cluster B, the second site, fails over from the bucket.
	siteA, err := b.c.CreateBackupRepo(ctx, api.BackupRepoCreateRequest{Name: "site-a", URL: url, Key: key, S3AccessKey: access, S3SecretKey: secret})
	if err != nil || !siteA.ReadOnly || siteA.Created {
		t.Fatalf("register the bucket on B: %+v %v", siteA, err)
	}
	start := time.Now()
	fo, err := b.c.Failover(ctx, api.FailoverRequest{Project: p, Repo: "site-a", BootCheck: true})
	if err != nil || len(fo.Restores) != 1 || fo.Restores[0].Backup != b2.Name {
		t.Fatalf("failover: %+v %v", fo, err)
	}
	waitRestore(t, b.c, p, fo.Restores[0].Name)
	t.Logf("failover of 1 VM (%d MiB) from the object store took %s", size>>20, time.Since(start))
	if got := simImage(t, b.hosts["h1"], p+".db1", size); !bytes.Equal(got, want) {
		t.Fatal("the disk failed over from the object store differs from the backed-up one")
	}
}

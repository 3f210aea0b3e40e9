package etcdstore_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// envLocalUser makes the test binary a child that plays an unprivileged
// local user: it gets the member's endpoint and TLS dir.
const envLocalUser = "VPOOL_ETCDSTORE_LOCAL_USER"

// An unprivileged local user on the server host (another uid, in a
// child process) can neither read the member's TLS material nor reach
// the store without it, even where every directory above the data dir
// lets it pass.
func TestLocalUserCannotReachEmbeddedStore(t *testing.T) {
	if spec := os.Getenv(envLocalUser); spec != "" {
		localUser(t, spec)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child process as another uid")
	}
	ctx := context.Background()
	root := t.TempDir()
	// the test's temp dirs are 0700: open them so that only the member's
	// own modes stand in the way
	for d := root; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s, err := etcdstore.StartEmbedded(ctx, etcdstore.Config{DataDir: filepath.Join(root, "etcd"), UnsafeNoFsync: true,
		HeartbeatInterval: 10 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// the test binary sits in a private build dir: copy it where the
	// child may run it
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "child.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestLocalUserCannotReachEmbeddedStore$", "-test.v")
	cmd.Env = append(os.Environ(), envLocalUser+"="+s.Endpoints()[0]+" "+s.LocalTLS().Dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestLocalUserCannotReachEmbeddedStore") {
		t.Fatalf("the unprivileged child: %v\n%s", err, out)
	}
	if _, err := s.Get(ctx, store.TokenKey("forged")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("forged token: %v", err)
	}
}

// localUser runs in the child, as uid 65534.
func localUser(t *testing.T, spec string) {
	endpoint, dir, _ := strings.Cut(spec, " ")
	if os.Geteuid() == 0 {
		t.Fatal("the child runs as root")
	}
	for _, f := range []string{"client.key", "ca.key", "vpool.key", "client.crt"} {
		if _, err := os.ReadFile(filepath.Join(dir, f)); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("read %s: %v, want permission denied", f, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if s, err := etcdstore.Connect(ctx, []string{endpoint}, nil); err == nil {
		_, _, werr := s.Txn(ctx, nil, []store.Op{store.Put(store.TokenKey("forged"), []byte(`{"role":"admin"}`))})
		s.Close()
		t.Fatalf("connected to the store without credentials (write: %v)", werr)
	}
}

package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// newBackend makes an empty backend for one test.
type newBackend func(t testing.TB) Backend

// backends are the backends every repository test runs against: a
// directory, and an S3 bucket served on loopback by gofakes3 (an S3 API
// server in Go: real HTTP and AWS signature v4 requests from the real
// client; not AWS, MinIO or Ceph themselves).
var backends = []struct {
	name string
	mk   newBackend
}{
	{"dir", func(t testing.TB) Backend { return &Dir{Root: t.TempDir()} }},
	{"s3", newS3Backend},
	// A real object store when one was built (seaweed_test.go); skips
	// with the reason otherwise.
	{"s3-seaweedfs", newWeedBackend},
}

func forBackends(t *testing.T, f func(t *testing.T, mk newBackend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { f(t, b.mk) })
	}
}

var (
	s3Once   sync.Once
	s3Server *httptest.Server
	s3Seq    atomic.Int64
)

// s3Endpoint is one S3 server on 127.0.0.1 for the package's tests,
// closed by TestMain's exit.
func s3Endpoint() string {
	s3Once.Do(func() {
		s3Server = httptest.NewServer(gofakes3.New(s3mem.New(), gofakes3.WithoutVersioning()).Server())
	})
	return strings.TrimPrefix(s3Server.URL, "http://")
}

// newS3Backend is a fresh prefix in a fresh bucket of the loopback server.
func newS3Backend(t testing.TB) Backend {
	t.Helper()
	n := s3Seq.Add(1)
	s, err := NewS3(S3Config{Endpoint: s3Endpoint(), Insecure: true, Bucket: fmt.Sprintf("vpool-test-%d", n),
		Prefix: "site/repo", AccessKey: "test", SecretKey: "test-secret"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.MakeBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestBackendContract holds every backend to the Backend interface's
// promises that the repository relies on.
func TestBackendContract(t *testing.T) { forBackends(t, testBackendContract) }

func testBackendContract(t *testing.T, mk newBackend) {
	ctx := context.Background()
	be := mk(t)
	if _, err := be.Get(ctx, "index/none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of an absent blob: %v, want ErrNotFound", err)
	}
	if _, err := be.Stat(ctx, "index/none"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of an absent blob: %v, want ErrNotFound", err)
	}
	if l, err := be.List(ctx, "chunks"); err != nil || len(l) != 0 {
		t.Fatalf("List of an empty prefix: %v %v", l, err)
	}
	puts := []struct {
		name string
		data string
		lazy bool
	}{
		{"chunks/bb/bb02", "two", true},
		{"chunks/aa/aa01", "one", true},
		{"chunksx/aa", "not under chunks/", false},
		{"index/b1", "index one", false},
	}
	for _, p := range puts {
		put := be.Put
		if p.lazy {
			put = be.PutLazy
		}
		if err := put(ctx, p.name, []byte(p.data)); err != nil {
			t.Fatalf("put %s: %v", p.name, err)
		}
	}
	if err := be.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := be.List(ctx, "chunks")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, b := range l {
		names = append(names, fmt.Sprintf("%s:%d", b.Name, b.Size))
	}
	if got := strings.Join(names, " "); got != "chunks/aa/aa01:3 chunks/bb/bb02:3" {
		t.Fatalf("List(chunks) = %s", got)
	}
	if err := be.Put(ctx, "index/b1", []byte("replaced")); err != nil {
		t.Fatal(err)
	}
	if b, err := be.Get(ctx, "index/b1"); err != nil || string(b) != "replaced" {
		t.Fatalf("Get after replace: %q %v", b, err)
	}
	if st, err := be.Stat(ctx, "index/b1"); err != nil || st.Size != 8 || st.ModTime.IsZero() {
		t.Fatalf("Stat: %+v %v", st, err)
	}
	// PutIfAbsent is what locks are made of: exactly one writer wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := be.PutIfAbsent(ctx, "locks/exclusive", []byte{byte(i)})
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, ErrExists):
				t.Errorf("PutIfAbsent: %v, want nil or ErrExists", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d writers took the lock, want 1", wins.Load())
	}
	if err := be.PutIfAbsent(ctx, "locks/exclusive", []byte("again")); !errors.Is(err, ErrExists) {
		t.Fatalf("PutIfAbsent over a blob: %v, want ErrExists", err)
	}
	for _, n := range []string{"locks/exclusive", "locks/exclusive", "never/was"} {
		if err := be.Delete(ctx, n); err != nil {
			t.Fatalf("Delete %s: %v", n, err)
		}
	}
	if err := be.PutIfAbsent(ctx, "locks/exclusive", []byte("after release")); err != nil {
		t.Fatalf("PutIfAbsent after Delete: %v", err)
	}
	for _, bad := range []string{"", "../escape", "/abs", "a/../../b", "a//b"} {
		if err := be.Put(ctx, bad, []byte("x")); err == nil || errors.Is(err, ErrExists) {
			t.Fatalf("Put(%q) = %v, want a bad-name error", bad, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := be.Put(cctx, "index/late", []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a cancelled context: %v", err)
	}
	if b, err := be.Get(ctx, "chunks/aa/aa01"); err != nil || !bytes.Equal(b, []byte("one")) {
		t.Fatalf("Get: %q %v", b, err)
	}
}

func TestParseS3URL(t *testing.T) {
	tests := []struct {
		raw  string
		want S3Config
		err  string
	}{
		{"s3://bk/site/a?endpoint=127.0.0.1:9000&insecure=1", S3Config{Endpoint: "127.0.0.1:9000", Insecure: true, Bucket: "bk", Prefix: "site/a"}, ""},
		{"s3://bk?endpoint=s3.example.net&region=eu-west-3", S3Config{Endpoint: "s3.example.net", Region: "eu-west-3", Bucket: "bk"}, ""},
		{"s3://bk/a", S3Config{}, "endpoint=HOST:PORT is required"},
		{"s3://key:secret@bk/a?endpoint=h:1", S3Config{}, "credentials go in the key file"},
		{"http://bk/a?endpoint=h:1", S3Config{}, "is not s3://"},
		{"s3://bk/a/../b?endpoint=h:1", S3Config{}, "clean path"},
		{"s3://bk/a?endpoint=http://h:1", S3Config{}, "no scheme"},
	}
	for _, tc := range tests {
		t.Run(tc.raw, func(t *testing.T) {
			got, err := ParseS3URL(tc.raw)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), ":secret") {
					t.Fatal("error shows a secret")
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v %v, want %+v", got, err, tc.want)
			}
			if again, err := ParseS3URL(got.URL()); err != nil || again != got {
				t.Fatalf("URL() %s reads back as %+v %v", got.URL(), again, err)
			}
		})
	}
}

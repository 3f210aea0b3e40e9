// Package etcdtest starts real multi-member etcd clusters for tests of
// any package: each member is an embedded etcd (etcdstore.StartEmbedded)
// in a child process of the test, on 127.0.0.1 ports, so a test can kill
// -9 one and see what the others do.
//
// Use from another package's tests:
//
//	func TestMain(m *testing.M) {
//		etcdtest.MaybeRunMember() // the child processes stop here
//		os.Exit(m.Run())
//	}
//
//	func TestSomething(t *testing.T) {
//		endpoints := etcdtest.StartCluster(t, 3)
//		s, err := etcdstore.Connect(ctx, endpoints, nil)
//		...
//	}
//
// With MaybeRunMember in TestMain, the children are the test binary
// itself (os.Args[0]), started with an environment variable that makes
// MaybeRunMember run a member instead of the tests. Without it, Start
// builds the small main package etcdtest/member with `go build` into the
// test's temp dir (a few seconds of linking) and runs that instead.
//
// Members serve plain http unless StartWith asks for mutual TLS (a CA
// shared by the members, and a client certificate for the test) and
// etcd's authentication (a root user with a password): what an external
// cluster behind --etcd-endpoints looks like.
//
// It imports internal/store/etcdstore and internal/pki, and the etcd
// client only to turn authentication on; only tests may import it.
package etcdtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vpool/vpool/internal/store/etcdstore"
)

// envMember carries a child's memberSpec (JSON).
const envMember = "VPOOL_ETCDTEST_MEMBER"

// readyLine is what a child prints on stdout when its member is ready.
const readyLine = "ETCDTEST-MEMBER-READY"

// hooked is set by MaybeRunMember: the test binary can be re-executed
// as a member.
var hooked atomic.Bool

// memberSpec is what a child needs to start its member.
type memberSpec struct {
	Name           string
	DataDir        string
	ClientURL      string
	PeerURL        string
	InitialCluster string
	TLSDir         string // "": plaintext
}

// MaybeRunMember runs an etcd member and exits when this process is a
// member started by Start; otherwise it returns at once. Call it first
// thing in TestMain.
func MaybeRunMember() {
	hooked.Store(true)
	if os.Getenv(envMember) == "" {
		return
	}
	os.Exit(RunMember())
}

// RunMember runs the member described by the environment until stdin
// closes or a SIGTERM/SIGINT comes, and returns the exit code. The member
// binary's main calls it.
func RunMember() int {
	var spec memberSpec
	if err := json.Unmarshal([]byte(os.Getenv(envMember)), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "etcdtest: bad %s: %v\n", envMember, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := etcdstore.StartEmbedded(ctx, etcdstore.Config{
		DataDir:           spec.DataDir,
		Name:              spec.Name,
		ClientURL:         spec.ClientURL,
		PeerURL:           spec.PeerURL,
		InitialCluster:    spec.InitialCluster,
		TLSDir:            spec.TLSDir,
		Plaintext:         spec.TLSDir == "",
		Logger:            log,
		UnsafeNoFsync:     true,
		HeartbeatInterval: 50 * time.Millisecond,
		ElectionTimeout:   500 * time.Millisecond,
		StartTimeout:      time.Minute,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "etcdtest: %v\n", err)
		return 1
	}
	defer s.Close()
	fmt.Println(readyLine)
	// The parent holds our stdin; it closes when the parent ends, even
	// when it dies, so no member outlives its test.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	<-ctx.Done()
	return 0
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lastLines returns at most n trailing lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// readyWriter is a child's stdout: it closes ready when the child
// prints readyLine.
type readyWriter struct {
	mu    sync.Mutex
	seen  []byte
	ready chan struct{}
	done  bool
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	w.seen = append(w.seen, p...)
	if bytes.Contains(w.seen, []byte(readyLine+"\n")) {
		w.done = true
		close(w.ready)
	}
	return len(p), nil
}

// dataDir is where member name keeps its data under root.
func dataDir(root, name string) string { return filepath.Join(root, name) }

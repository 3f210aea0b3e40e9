// Package cluster is the harness of the multi-process tests under test/
// (test/ha, test/chaos): it builds cmd/vpool once per test binary, runs
// `vpool server` processes that each embed a store member (the first
// alone, the others joining it with server join tokens) and `vpool
// agent` processes, kills them with SIGKILL as a crash would and starts
// them again on the same data dirs and ports.
//
// Children never outlive the test (Pdeathsig, and a stop at cleanup);
// their output goes to log files that are dumped when the test fails.
// It imports the client, api and model packages and testenv, never the
// server or the store: the tests see the cluster from outside. Only test
// packages import it.
package cluster

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/testenv"
)

// The binary, built once per test binary.
var (
	bin      string
	buildErr error
	building sync.Once
	binDir   string
)

// Binary returns the vpool binary built from this tree (once): it skips
// with -short (or fails under VPOOL_REQUIRE_HEAVY=1), and fails when go
// is missing or the build fails.
func Binary(tb testing.TB) string {
	tb.Helper()
	if testing.Short() {
		testenv.SkipOrFail(tb, "the test runs vpool server and agent processes; skipped with -short")
	}
	testenv.MustHaveTool(tb, "go", "the test builds ./cmd/vpool")
	building.Do(func() {
		dir, err := os.MkdirTemp("", "vpool-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		out := filepath.Join(dir, "vpool")
		cmd := exec.Command("go", "build", "-o", out, "./cmd/vpool")
		cmd.Dir = repoRoot()
		if b, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("cluster: go build ./cmd/vpool: %v\n%s", err, b)
			return
		}
		bin = out
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return bin
}

// RemoveBinary deletes the built binary; call it from TestMain after
// m.Run.
func RemoveBinary() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

func repoRoot() string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "."
		}
		dir = parent
	}
}

// FreeAddr is a loopback address with a port free right now.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// IsolatedEnv is the test's environment without the user's vpool
// variables and CLI config (HOME in a temporary directory).
func IsolatedEnv(tb testing.TB) []string {
	home := tb.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VPOOL_") || strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"))
}

// Eventually polls cond every 50 ms and fails the test when it is still
// false after within.
func Eventually(tb testing.TB, what string, within time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Package testenv decides what a test does when this machine lacks what
// it needs (a tool, root, a data set): skip with the reason on a
// developer's machine, fail under VPOOL_REQUIRE_HEAVY=1, which CI and
// scripts/test.sh as root set, so that in CI every test runs and can
// fail. Every such check in the repository goes through it.
//
// It imports only the standard library, testing and golang.org/x/sys/unix
// (InNetns); only tests and
// test-support packages import it, never production code.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// RequireHeavyEnv is the variable that forbids skipping.
const RequireHeavyEnv = "VPOOL_REQUIRE_HEAVY"

// Required reports whether nothing may be skipped here
// (VPOOL_REQUIRE_HEAVY=1).
func Required() bool { return os.Getenv(RequireHeavyEnv) == "1" }

// SkipOrFail ends the test because something it needs is missing: it
// skips with the reason, or fails with it when Required.
func SkipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		tb.Fatalf("%s — and %s=1 forbids skipping", msg, RequireHeavyEnv)
		return
	}
	tb.Skip(msg)
}

// MustHaveRoot ends the test (SkipOrFail) unless it runs as root; why
// says what needs it.
func MustHaveRoot(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		SkipOrFail(tb, "%s needs root", why)
	}
}

// sbinDirs hold administration tools (ip, blkid) that an unprivileged
// user's PATH often lacks.
var sbinDirs = []string{"/usr/sbin", "/sbin"}

// LookTool finds an executable in PATH, then in /usr/sbin and /sbin.
func LookTool(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err == nil {
		return p, nil
	}
	for _, d := range sbinDirs {
		if q, err2 := exec.LookPath(filepath.Join(d, name)); err2 == nil {
			return q, nil
		}
	}
	return "", err
}

// MustHaveTool returns the path of an executable (LookTool), or ends the
// test (SkipOrFail) with hint saying how to install it.
func MustHaveTool(tb testing.TB, name, hint string) string {
	tb.Helper()
	p, err := LookTool(name)
	if err != nil {
		SkipOrFail(tb, "%s not found (%s)", name, hint)
	}
	return p
}

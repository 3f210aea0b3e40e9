package guest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/testenv"
)

// buildProgram compiles one of the test guest's C helpers
// (scripts/guest/NAME.c) for this host, as build-guest.sh does for the
// guest, so its logic can be tested without booting anything.
func buildProgram(t *testing.T, name string) string {
	t.Helper()
	gcc := testenv.MustHaveTool(t, "gcc", "apt-get install gcc libc6-dev; builds the test guest's helpers")
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command(gcc, "-O2", "-Wall", "-Werror", "-o", bin, filepath.Join(root, "scripts", "guest", name+".c")).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc %s.c: %v\n%s", name, err, out)
	}
	return bin
}

// TestDirtyVerifierSeesLostWrite runs the guest's memory writer/verifier
// natively: clean runs report no failure, and a write it is told to lose
// (VPOOL_DIRTY_LOSE, what a migration that drops a dirty page does to the
// guest) is reported as a VERIFY-FAIL naming the page and the pass, with
// a non-zero exit. The soak test relies on exactly this to fail on a
// QEMU that loses writes.
func TestDirtyVerifierSeesLostWrite(t *testing.T) {
	bin := buildProgram(t, "dirty")
	cases := []struct {
		name     string
		env      []string
		wantFail string // a VERIFY-FAIL line must match; empty: none may appear
	}{
		{name: "clean", env: []string{"VPOOL_DIRTY_PASSES=6"}},
		{name: "lost write in pass 3", env: []string{"VPOOL_DIRTY_PASSES=6", "VPOOL_DIRTY_LOSE=3:100"},
			wantFail: `VERIFY-FAIL page=100 pass=4 got=0000000200000064 want=0000000300000064`},
		{name: "lost write in the first pass", env: []string{"VPOOL_DIRTY_PASSES=3", "VPOOL_DIRTY_LOSE=1:0"},
			wantFail: `VERIFY-FAIL page=0 pass=2 got=0000000000000000 want=0000000100000000`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin, "2", "0", "1")
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.Output()
			got := string(out)
			if !regexp.MustCompile(`(?m)^VERIFY 1 pages=512 static=1024 fails=0$`).MatchString(got) {
				t.Fatalf("no first VERIFY report:\n%s", got)
			}
			if tc.wantFail == "" {
				if err != nil || strings.Contains(got, "VERIFY-FAIL") {
					t.Fatalf("clean run: %v\n%s", err, got)
				}
				return
			}
			if err == nil || !strings.Contains(got, tc.wantFail) || !strings.Contains(got, "fails=1") {
				t.Fatalf("exit %v, want a failure with %q and fails=1:\n%s", err, tc.wantFail, got)
			}
		})
	}
}

// TestTickerPrintsConsecutiveTicks: the ticker numbers its lines one by
// one (the guest gap counts on it) and stamps them with the uptime in ms.
func TestTickerPrintsConsecutiveTicks(t *testing.T) {
	bin := buildProgram(t, "tick")
	cmd := exec.Command(bin, "20")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	buf := make([]byte, 0, 256)
	tmp := make([]byte, 64)
	for strings.Count(string(buf), "\n") < 3 {
		n, err := out.Read(tmp)
		if err != nil {
			t.Fatalf("reading the ticker: %v (got %q)", err, buf)
		}
		buf = append(buf, tmp[:n]...)
	}
	lines := strings.Split(string(buf), "\n")
	for i, want := range []string{"TICK 1 ", "TICK 2 ", "TICK 3 "} {
		if !strings.HasPrefix(lines[i], want) || !regexp.MustCompile(`^TICK \d+ \d+\.\d{3}$`).MatchString(lines[i]) {
			t.Fatalf("line %d = %q, want %q<uptime with ms>", i, lines[i], want)
		}
	}
}

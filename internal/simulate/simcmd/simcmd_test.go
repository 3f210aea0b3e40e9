package simcmd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/simulate"
)

func writeTrace(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for i := 0; i < 8; i++ {
		var b strings.Builder
		for s := 0; s < 12; s++ {
			fmt.Fprintf(&b, "%d\n", 10+(i*7+s*3)%40)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("vm%02d", i)), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func execute(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := New()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), errb.String(), err
}

func TestSimJSONAndSVG(t *testing.T) {
	dir := writeTrace(t)
	svg := filepath.Join(t.TempDir(), "c.svg")
	out, stderr, err := execute(t, "--trace", dir, "--policy", "lr-mmt-1.2", "--hosts", "20", "-o", "json", "--svg", svg)
	if err != nil {
		t.Fatal(err)
	}
	var r simulate.Result
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if r.Policy != "lr-mmt-1.2" || r.VMs != 8 || r.Hosts != 20 || r.EnergyKWh <= 0 || r.Series != nil || r.Placement != simulate.PlacementPABFD {
		t.Errorf("result: %+v", r)
	}
	for _, key := range []string{"energy_kwh", "slatah", "pdm", "slav", "esv", "migrations", "host_shutdowns", "mean_active_hosts", "wall_s", "placement"} {
		if !strings.Contains(out, `"`+key+`"`) {
			t.Errorf("json lacks %q", key)
		}
	}
	if !strings.Contains(stderr, "100%") {
		t.Errorf("no progress bar on stderr: %q", stderr)
	}
	if b, err := os.ReadFile(svg); err != nil || !bytes.HasPrefix(b, []byte("<svg")) {
		t.Errorf("svg: %v %.40s", err, b)
	}
}

func TestSimTableCSVAndPolicies(t *testing.T) {
	csv := filepath.Join(t.TempDir(), "t.csv")
	if err := os.WriteFile(csv, []byte("vm,timestamp,cpu_pct\na,0,20\na,300,30\nb,0,50\nb,300,10\na,600,5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := execute(t, "--trace", csv, "--setup", "realistic", "--hosts", "4", "-q")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "energy") || !strings.Contains(out, "vpool") || !strings.Contains(out, "realistic") || !strings.Contains(out, "scheduler") {
		t.Errorf("table:\n%s", out)
	}
	out, _, err = execute(t, "policies")
	if err != nil || !strings.Contains(out, "lr-mmt-1.2") || !strings.Contains(out, "vpool") {
		t.Errorf("policies: %v\n%s", err, out)
	}
}

// The simulated cluster runs the server's default ratios unless
// --cpu-ratio or --memory-ratio say otherwise; the literature's placement
// uses none.
func TestSimRatios(t *testing.T) {
	dir := writeTrace(t)
	for _, tc := range []struct {
		args     []string
		cpu, mem float64
	}{
		{nil, 4, 1},
		{[]string{"--cpu-ratio", "1.5"}, 1.5, 1},
		{[]string{"--memory-ratio", "2"}, 4, 2},
		{[]string{"--cpu-ratio", "2", "--policy", "thr-mmt-0.8"}, 0, 0},
	} {
		out, _, err := execute(t, append([]string{"--trace", dir, "--hosts", "20", "-q", "-o", "json"}, tc.args...)...)
		if err != nil {
			t.Fatal(err)
		}
		var r simulate.Result
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("json: %v\n%s", err, out)
		}
		if r.CPURatio != tc.cpu || r.MemoryRatio != tc.mem {
			t.Errorf("%v: cpu_ratio %v, memory_ratio %v; want %v and %v", tc.args, r.CPURatio, r.MemoryRatio, tc.cpu, tc.mem)
		}
	}
	out, _, err := execute(t, "--trace", dir, "--hosts", "20", "-q", "--cpu-ratio", "3")
	if err != nil || !strings.Contains(out, "cpu / memory ratio") || !strings.Contains(out, "3 / 1\n") {
		t.Errorf("table: %v\n%s", err, out)
	}
}

func TestSimUsageErrors(t *testing.T) {
	dir := writeTrace(t)
	tests := [][]string{
		{},
		{"--trace", dir, "-o", "yaml"},
		{"--trace", dir, "--order", "random", "-q"},
	}
	for _, args := range tests {
		if _, _, err := execute(t, args...); !errors.Is(err, ErrUsage) {
			t.Errorf("%v: err = %v, want ErrUsage", args, err)
		}
	}
	if _, _, err := execute(t, "--trace", dir, "--setup", "mars", "-q"); !errors.Is(err, simulate.ErrConfig) {
		t.Errorf("bad setup: %v", err)
	}
	for _, flag := range []string{"--cpu-ratio", "--memory-ratio"} {
		if _, _, err := execute(t, "--trace", dir, flag, "-1", "-q"); !errors.Is(err, simulate.ErrConfig) {
			t.Errorf("negative %s: %v", flag, err)
		}
	}
	if _, _, err := execute(t, "--trace", filepath.Join(dir, "missing"), "-q"); err == nil {
		t.Error("missing trace accepted")
	}
}

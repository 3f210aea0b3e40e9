package testenv

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that records how a test ended.
type recorder struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	r.skipped, r.msg = true, fmt.Sprint(args...)
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
}

func TestSkipOrFail(t *testing.T) {
	for _, tc := range []struct {
		env              string
		skipped, failed  bool
		wantInMsg, noMsg string
	}{
		{env: "", skipped: true, wantInMsg: "qemu missing", noMsg: RequireHeavyEnv},
		{env: "0", skipped: true, wantInMsg: "qemu missing"},
		{env: "1", failed: true, wantInMsg: RequireHeavyEnv + "=1 forbids skipping"},
	} {
		t.Run("env="+tc.env, func(t *testing.T) {
			t.Setenv(RequireHeavyEnv, tc.env)
			r := &recorder{TB: t}
			SkipOrFail(r, "qemu %s", "missing")
			if r.skipped != tc.skipped || r.failed != tc.failed {
				t.Fatalf("skipped %v failed %v, want %v %v", r.skipped, r.failed, tc.skipped, tc.failed)
			}
			if !strings.Contains(r.msg, tc.wantInMsg) || (tc.noMsg != "" && strings.Contains(r.msg, tc.noMsg)) {
				t.Errorf("message %q", r.msg)
			}
		})
	}
}

func TestMustHaveTool(t *testing.T) {
	t.Setenv(RequireHeavyEnv, "1")
	r := &recorder{TB: t}
	if p := MustHaveTool(r, "sh", "apt-get install dash"); p == "" || r.failed || r.skipped {
		t.Errorf("sh: %q, %+v", p, r)
	}
	MustHaveTool(r, "vpool-no-such-tool", "install it")
	if !r.failed || !strings.Contains(r.msg, "vpool-no-such-tool not found (install it)") {
		t.Errorf("missing tool under %s=1: %+v", RequireHeavyEnv, r)
	}
}

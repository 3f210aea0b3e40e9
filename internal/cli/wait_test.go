package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vpool/vpool/internal/model"
)

// TestWait checks waiting (the default; --wait is kept as a no-op, and
// --no-wait or --wait=false return at once): one progress line per change
// on stderr, the final state on stdout, and failures with the VM's last
// error.
func TestWait(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr []string
	}{
		{"create", []string{"vm", "create", "new1", "--wait"}, 0,
			"NAME  PROJECT  PHASE    HOST  VCPUS  MEMORY  DISK  AGE\nnew1  default  running  h1    1      1GiB    0B    5m\n",
			[]string{"new1: scheduling", "new1: creating on h1: cloning image", "new1: running on h1"}},
		{"create stopped", []string{"vm", "create", "new1", "--stopped", "--wait", "-o", "json"}, 0, "",
			[]string{"new1: scheduling", "new1: creating on h1: cloning image", "new1: stopped on h1"}},
		{"create fails", []string{"vm", "create", "failing", "--wait"}, 1, "",
			[]string{"failing: scheduling", "failing: failed on h1 (error: disk image not found)", "error: vm failing failed: disk image not found"}},
		{"create times out", []string{"vm", "create", "slow1", "--wait", "--timeout", "30ms"}, 1, "",
			[]string{"slow1: pending", "error: vm slow1: still pending after 30ms, not running (wait longer with --timeout)"}},
		{"batch", []string{"vm", "create", "w", "--count", "2", "--wait"}, 0,
			"NAME  PROJECT  PHASE    HOST  VCPUS  MEMORY  DISK  AGE\nw-1   default  running  h1    1      1GiB    0B    5m\nw-2   default  running  h1    1      1GiB    0B    5m\n",
			[]string{"w-1: scheduling", "w-1: creating on h1: cloning image", "w-1: running on h1",
				"w-2: scheduling", "w-2: creating on h1: cloning image", "w-2: running on h1"}},
		{"stop two", []string{"vm", "stop", "web1", "db", "--wait"}, 0, "vm web1: stopped on h1\nvm db: stopped on h1\n",
			[]string{"web1: stopping on h1", "web1: stopped on h1", "db: stopping on h1", "db: stopped on h1"}},
		{"start", []string{"vm", "start", "db", "--wait"}, 0, "vm db: running on h1\n",
			[]string{"db: creating on h1", "db: running on h1"}},
		{"restart", []string{"vm", "restart", "web1", "--wait"}, 0, "vm web1: restarted on h1\n",
			[]string{"web1: running on h1: restarting", "web1: running on h1"}},
		{"delete", []string{"vm", "delete", "web1", "--wait"}, 0, "vm web1: deleted\n",
			[]string{"web1: deleting on h1"}},
		{"delete without wait", []string{"vm", "delete", "web1", "--no-wait"}, 0, "vm web1: deletion requested\n", nil},
		{"--wait=false is --no-wait", []string{"vm", "stop", "web1", "--wait=false"}, 0, "vm web1: stop requested\n", nil},
		{"waiting is the default", []string{"vm", "create", "new1"}, 0,
			"NAME  PROJECT  PHASE    HOST  VCPUS  MEMORY  DISK  AGE\nnew1  default  running  h1    1      1GiB    0B    5m\n",
			[]string{"new1: scheduling", "new1: creating on h1: cloning image", "new1: running on h1"}},
		{"create that fits nowhere", []string{"vm", "create", "nofit1"}, 1, "",
			[]string{"nofit1: pending: waiting for capacity: no host has 64 free vCPUs",
				"error: vm nofit1 fits no host yet: no host has 64 free vCPUs; it stays pending and is placed when capacity frees up ('vpool vm show nofit1' explains, 'vpool vm delete nofit1' gives up)"}},
		{"stop waits by default", []string{"vm", "stop", "web1", "--force"}, 0, "vm web1: stopped on h1\n",
			[]string{"web1: stopping on h1", "web1: stopped on h1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			seed(f)
			res := f.cli(t, tc.args...)
			if res.code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", res.code, tc.code, res.stderr)
			}
			if tc.stdout != "" && res.stdout != tc.stdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", res.stdout, tc.stdout)
			}
			var got []string
			if res.stderr != "" {
				got = lines(res.stderr)
			}
			if diff := cmp.Diff(tc.stderr, got); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStartFailedVM: a VM that is failed when asked to start is not
// reported as failed before the agent acted.
func TestStartFailedVM(t *testing.T) {
	f := newFake(t)
	seed(f)
	// start sets the script [creating, running]; put the old failure first.
	f.mu.Lock()
	f.afterPower = func(vm *model.VM) {
		f.scripts[vm.Key()] = append([]model.VMStatus{{Phase: model.PhaseFailed, LastError: "no host fits"}}, f.scripts[vm.Key()]...)
	}
	f.mu.Unlock()
	res := f.cli(t, "--project", "team-a", "vm", "start", "batch1", "--wait")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	want := []string{"batch1: failed (error: no host fits)", "batch1: creating", "batch1: running"}
	if diff := cmp.Diff(want, lines(res.stderr)); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
}

// TestWaitInterrupted: cancelling the context (Ctrl-C) ends --wait with an
// error and exit code 1.
func TestWaitInterrupted(t *testing.T) {
	f := newFake(t)
	seed(f)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	res := invocation{ctx: ctx}.run(t, "--addr", f.srv.URL, "--token", goodToken, "vm", "create", "slow2", "--wait")
	if res.code != 1 || !strings.Contains(res.stderr, "context deadline exceeded") {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
}

// A graceful stop that takes a while says how to force it, once.
func TestStopHint(t *testing.T) {
	f := newFake(t)
	seed(f)
	tick := now
	e := env{
		lookup:    func(string) (string, bool) { return "", false },
		configDir: func() (string, error) { return t.TempDir(), nil },
		now:       func() time.Time { tick = tick.Add(10 * time.Second); return tick },
		pollMin:   time.Millisecond, pollMax: 2 * time.Millisecond,
	}
	root := newRoot("1.2.3", e)
	var out, errb syncBuffer
	root.SetOut(&out)
	root.SetErr(&errb)
	if code := run(context.Background(), root, []string{"--addr", f.srv.URL, "--token", goodToken, "vm", "stop", "web1"}); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if n := strings.Count(errb.String(), "'vpool vm stop web1 --force' pulls the plug"); n != 1 {
		t.Fatalf("the hint appears %d times:\n%s", n, errb.String())
	}
}

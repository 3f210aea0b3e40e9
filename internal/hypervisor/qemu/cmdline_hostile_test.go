package qemu

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/qemu/guest"
	"github.com/vpool/vpool/internal/model"
)

// hostileValues are what a tenant (or a bad record) could put into a
// value that reaches the command line.
var hostileValues = []string{
	"52:54:00:12:34:56,romfile=/etc/shadow",
	"a,,b,c=d",
	`"quoted",x="y"`,
	`{"driver":"pci-testdev"}`,
	"nul\x00byte,id=z",
	"new\nline,bootindex=9",
	"../../../etc/passwd",
	"=,=",
	",",
	`\",\"romfile\":\"/etc/shadow`,
}

// valuedMachine is a machine whose every free-form value is v.
func valuedMachine(v string) Machine {
	m := baseMachine()
	m.Name, m.Type = v, v
	m.QMPSocket, m.ConsoleSocket, m.SerialLog, m.GuestAgentSocket = v, v, v, v
	m.Seed = v
	m.Secrets = []Secret{{ID: "sec1", File: v}}
	m.HotplugPorts = []string{"hp0"}
	m.Drives = []Drive{{DeviceID: "vd0", Serial: v, BootIndex: 1, Bus: "hp0", Layers: []Layer{
		{Node: "d0b", File: v, Format: "qcow2", ReadOnly: true},
		{Node: "d0l0", File: v, Format: "qcow2", Secret: "sec1"},
	}}}
	m.NICs = []NICDev{{ID: "net0", MAC: v}, {ID: "net1", Tap: v, MAC: v}}
	return m
}

// keyvalOptions are the options QEMU parses as key=value lists.
var keyvalOptions = []string{"-name", "-machine", "-accel", "-smp", "-m", "-chardev", "-mon", "-sandbox"}

// splitKeyval parses a key=value option as QEMU does: a single comma
// ends a value, a doubled one is a literal comma. It returns the keys in
// order (the first bare item as "<implied>").
func splitKeyval(s string) []string {
	var keys []string
	first := true
	for len(s) > 0 || first {
		item := ""
		for len(s) > 0 {
			if s[0] == ',' {
				if len(s) > 1 && s[1] == ',' {
					item += ","
					s = s[2:]
					continue
				}
				s = s[1:]
				break
			}
			item += s[:1]
			s = s[1:]
		}
		k, _, ok := strings.Cut(item, "=")
		if !ok && first {
			k = "<implied>"
		}
		keys = append(keys, k)
		first = false
	}
	return keys
}

// flagOptions are the options without a value.
var flagOptions = []string{"-nodefaults", "-no-user-config", "-S"}

// shape is the structure of a command line: every option, and for its
// value the keys of a key=value list or the members of a JSON object.
// Values are read as QEMU reads them: an option, then its value.
func shape(t *testing.T, args []string) []string {
	t.Helper()
	var out []string
	for i := 0; i < len(args); i++ {
		opt := args[i]
		if !strings.HasPrefix(opt, "-") {
			t.Fatalf("argument %d %q is not an option", i, opt)
		}
		out = append(out, opt)
		if slices.Contains(flagOptions, opt) {
			continue
		}
		if i+1 >= len(args) {
			t.Fatalf("option %s has no value", opt)
		}
		i++
		a := args[i]
		switch {
		case slices.Contains([]string{"-device", "-blockdev", "-netdev", "-object"}, opt):
			var o map[string]any
			if err := json.Unmarshal([]byte(a), &o); err != nil {
				t.Fatalf("%s %q is not JSON: %v", opt, a, err)
			}
			keys := make([]string, 0, len(o))
			for k := range o {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			out = append(out, "json:"+strings.Join(keys, ","))
		case slices.Contains(keyvalOptions, opt):
			out = append(out, "kv:"+strings.Join(splitKeyval(a), ","))
		default:
			out = append(out, "value")
		}
	}
	return out
}

// TestHostileValuesCannotAddOptions renders a machine whose every value
// is hostile and checks that the command line has exactly the options,
// keys and JSON members of a machine with harmless values: a value can
// change a value, never add an option.
func TestHostileValuesCannotAddOptions(t *testing.T) {
	want := shape(t, valuedMachine("harmless").Args())
	for _, v := range hostileValues {
		t.Run(strings.ReplaceAll(v, "/", "_"), func(t *testing.T) {
			args := valuedMachine(v).Args()
			if diff := cmp.Diff(want, shape(t, args)); diff != "" {
				t.Fatalf("value %q changed the command line's structure (-harmless +hostile):\n%s\n%s", v, diff, strings.Join(args, "\n"))
			}
			// JSON values arrive as given.
			for i, a := range args {
				if i == 0 || args[i-1] != "-device" || !strings.Contains(a, "virtio-net-pci") {
					continue
				}
				var o map[string]any
				json.Unmarshal([]byte(a), &o)
				if o["mac"] != v {
					t.Errorf("mac = %q, want %q", o["mac"], v)
				}
			}
		})
	}
}

func TestMachineCheck(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Machine)
		ok   bool
	}{
		{"plain", func(m *Machine) { m.CPUModel = "Haswell-noTSX" }, true},
		{"cpu model with features", func(m *Machine) { m.CPUModel = "qemu64,+vmx" }, false},
		{"cpu model with a space", func(m *Machine) { m.CPUModel = "qemu64 x" }, false},
		{"NUL in a path", func(m *Machine) { m.SerialLog = "/a\x00b" }, false},
		{"NUL in a MAC", func(m *Machine) { m.NICs = []NICDev{{ID: "net0", MAC: "52:54:00:00:00:01\x00"}} }, true}, // JSON escapes it
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := baseMachine()
			tt.edit(&m)
			if err := m.Check(); (err == nil) != tt.ok {
				t.Fatalf("Check = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestHostileMACReachesQEMUAsAValue runs QEMU with a MAC that once loaded
// /etc/shadow as a ROM: QEMU must refuse the value, not take romfile.
func TestHostileMACReachesQEMUAsAValue(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	dir := shortTempDir(t)
	rom := filepath.Join(dir, "rom")
	os.WriteFile(rom, []byte("secret"), 0o600)
	m := Machine{Name: "t", Accel: "tcg", Type: "q35", VCPUs: 1, MemoryMiB: 64,
		QMPSocket: filepath.Join(dir, "q"), ConsoleSocket: filepath.Join(dir, "c"), SerialLog: filepath.Join(dir, "s"),
		PidFile: filepath.Join(dir, "p"), StartPaused: true,
		NICs: []NICDev{{ID: "net0", MAC: "52:54:00:12:34:56,romfile=" + rom}}}
	// A QEMU that took the value would wait paused (-S): the context ends it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, m.Args()...).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("QEMU started with a hostile MAC (err %v): %s", err, out)
	}
	if !strings.Contains(string(out), "doesn't take value") {
		t.Fatalf("QEMU failed for another reason: %s", out)
	}
}

// TestCreateRefusesHostileValues: the driver checks what reaches paths
// and QEMU itself, whatever the API let through, and leaves nothing.
func TestCreateRefusesHostileValues(t *testing.T) {
	guest.Require(t)
	d := newDriver(t, testConfig(t, shortTempDir(t)))
	tests := []struct {
		name string
		edit func(*hypervisor.VMConfig)
	}{
		{"mac with an option", func(c *hypervisor.VMConfig) {
			c.Spec.NICs = []model.NIC{{MAC: "52:54:00:12:34:56,romfile=/etc/shadow"}}
		}},
		{"mac with a newline", func(c *hypervisor.VMConfig) { c.Spec.NICs = []model.NIC{{MAC: "52:54:00:12:34:56\n"}} }},
		{"disk name traversal", func(c *hypervisor.VMConfig) { c.Spec.Disks[0].Name = "../../x" }},
		{"disk name with a slash", func(c *hypervisor.VMConfig) { c.Spec.Disks[0].Name = "a/b" }},
		{"disk name glob", func(c *hypervisor.VMConfig) { c.Spec.Disks[0].Name = "*" }},
		{"id traversal", func(c *hypervisor.VMConfig) { c.ID = "../x" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := hypervisor.VMConfig{ID: "test.hostile", Name: "hostile", Project: "test",
				Spec: model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB, Disks: []model.Disk{{Name: "root", Size: model.MiB}}}}
			tt.edit(&cfg)
			if err := d.Create(context.Background(), cfg); err == nil {
				t.Fatalf("Create accepted %+v", cfg.Spec)
			}
			if _, err := d.get(cfg.ID); err == nil {
				t.Fatal("a refused VM has a record")
			}
			if ents, _ := os.ReadDir(d.cfg.Pools["default"]); len(ents) > 0 {
				t.Fatalf("a refused VM left %d entries in the pool", len(ents))
			}
		})
	}
}

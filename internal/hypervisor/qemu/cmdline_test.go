package qemu

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func baseMachine() Machine {
	return Machine{
		Name: "test.web1", Accel: "tcg", TCGCacheMiB: 64, Type: "q35",
		VCPUs: 1, MaxVCPUs: 8, MemoryMiB: 128, MaxMemMiB: 512, MemSlots: 4,
		QMPSocket:     "/var/lib/vpool/vms/test.web1/qmp.sock",
		ConsoleSocket: "/var/lib/vpool/vms/test.web1/console.sock",
		SerialLog:     "/var/lib/vpool/vms/test.web1/serial.log",
		PidFile:       "/var/lib/vpool/vms/test.web1/qemu.pid",
		Balloon:       true, StartPaused: true, Sandbox: true,
	}
}

func TestMachineArgsGolden(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Machine)
	}{
		{"tcg-kernel-user-net", func(m *Machine) {
			m.Kernel, m.Initrd, m.Append = "/cache/vmlinux", "/cache/initramfs.cpio.gz", "console=ttyS0 quiet vpool.tick=1"
			m.Drives = []Drive{{DeviceID: "vd0", Serial: "root", Layers: []Layer{
				{Node: "d0l0", File: "/pools/default/test.web1/root.0.qcow2", Format: "qcow2"},
			}}}
			m.NICs = []NICDev{{ID: "net0", MAC: "52:54:00:12:34:56"}}
		}},
		{"kvm-linked-clone-snapshots-luks-tap", func(m *Machine) {
			m.Accel, m.TCGCacheMiB, m.CPUModel = "kvm", 0, "host"
			m.VCPUs, m.MaxVCPUs, m.MemoryMiB, m.MaxMemMiB = 2, 8, 2048, 8192
			m.Secrets = []Secret{{ID: "sec1", File: "/dev/fd/3"}}
			m.Drives = []Drive{
				{DeviceID: "vd0", Serial: "root", BootIndex: 1, Layers: []Layer{
					{Node: "d0b", File: "/images/debian-12.qcow2", Format: "qcow2", ReadOnly: true},
					{Node: "d0l0", File: "/pools/default/test.web1/root.0.qcow2", Format: "qcow2", ReadOnly: true},
					{Node: "d0l1", File: "/pools/default/test.web1/root.1.qcow2", Format: "qcow2"},
				}},
				{DeviceID: "vd1", Serial: "data,with,commas", Bus: "hp0", Layers: []Layer{
					{Node: "d1l0", File: "/pools/fast/test.web1/data.0.qcow2", Format: "qcow2", Secret: "sec1"},
				}},
			}
			// net1 is on a vpool network with jumbo frames: the guest is
			// told its MTU through host_mtu.
			m.NICs = []NICDev{{ID: "net0", Tap: "vp0123456789a0", MAC: "52:54:00:aa:bb:cc"}, {ID: "net1", Tap: "vn0123456789ab", MAC: "0a:00:00:00:00:01", MTU: 8950}}
			m.HotplugPorts = []string{"hp0", "hp1"}
			m.Seed = "/state/vms/test.web1/seed.iso"
			m.GuestAgentSocket = "/var/lib/vpool/vms/test.web1/qga.sock"
			m.Watchdog = "pause"
		}},
		// Every free-form value hostile: they stay values (JSON strings,
		// doubled commas); TestHostileValuesCannotAddOptions checks it.
		{"hostile-values", func(m *Machine) { *m = valuedMachine("x,romfile=/etc/shadow,\"q\"\n../y") }},
		{"incoming-no-hotplug-memory", func(m *Machine) {
			m.MaxMemMiB, m.MemSlots = 0, 0
			m.Incoming = "defer"
			m.Balloon = false
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := baseMachine()
			tt.edit(&m)
			got := strings.Join(m.Args(), "\n") + "\n"
			path := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestMachineArgsGolden -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("command line differs from %s (-want +got):\n%s", path, diff)
			}
		})
	}
}

func TestArgsNeverCarrySecrets(t *testing.T) {
	m := baseMachine()
	m.Secrets = []Secret{{ID: "sec0", File: "/dev/fd/3"}}
	for _, a := range m.Args() {
		if strings.Contains(a, "data=") {
			t.Fatalf("argument %q carries secret data", a)
		}
	}
}

package qemu

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// With descriptors handed over, QEMU is told no socket path and no tap
// name: it creates nothing and opens no device (vmuser.go).
func TestArgsUseHandedOverDescriptors(t *testing.T) {
	m := Machine{Name: "x", Type: "q35", Accel: "tcg", VCPUs: 1, MemoryMiB: 128,
		QMPSocket: "/s/qmp.sock", ConsoleSocket: "/s/console.sock", GuestAgentSocket: "/s/qga.sock", SerialLog: "/s/serial.log",
		QMPFD: 3, ConsoleFD: 4, GuestAgentFD: 5,
		NICs: []NICDev{{ID: "net0", Tap: "vp0123456789", TapFD: 6, MAC: "52:54:00:00:00:01"}}}
	args := strings.Join(m.Args(), " ")
	for _, want := range []string{"socket,id=qmp,fd=3,server=on", "socket,id=console,fd=4,server=on", "socket,id=qga,fd=5,server=on", `"fd":"6"`} {
		if !strings.Contains(args, want) {
			t.Errorf("args lack %q:\n%s", want, args)
		}
	}
	for _, bad := range []string{"qmp.sock", "console.sock", "qga.sock", "vp0123456789", "ifname"} {
		if strings.Contains(args, bad) {
			t.Errorf("args name %q although a descriptor was handed over:\n%s", bad, args)
		}
	}
	if !slices.Contains(m.Args(), "-serial") {
		t.Errorf("no serial console")
	}
}

// chownFile never follows a link (a layer replaced by a symlink to a host
// file must not hand that file to the VM).
func TestChownFileRefusesLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	dir := t.TempDir()
	target := filepath.Join(dir, "host-file")
	mustDo(t, "write", os.WriteFile(target, []byte("x"), 0o600))
	link := filepath.Join(dir, "layer.qcow2")
	mustDo(t, "symlink", os.Symlink(target, link))
	if err := chownFile(link, 4242, 4242, 0o600); err == nil {
		t.Fatal("chownFile followed a symlink")
	}
	var st syscall.Stat_t
	mustDo(t, "stat", syscall.Stat(target, &st))
	if st.Uid != 0 {
		t.Fatalf("the link's target now belongs to %d", st.Uid)
	}
}

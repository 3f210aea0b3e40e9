package qemu

import (
	"errors"
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

// An image file VM users cannot read in place (a directory above it
// closed to them) is copied once under StateDir/images, readable by all;
// one they can read is used as it is.
func TestShareableCopiesWhatVMUsersCannotRead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("per-VM users need root")
	}
	state := shortTempDir(t)
	mustDo(t, "chmod", os.Chmod(state, 0o711))
	d := &Driver{cfg: Config{StateDir: state}, log: testLogger(t), users: &uidAllocator{}}
	closed := t.TempDir() // 0700
	kernel := filepath.Join(closed, "vmlinux")
	mustDo(t, "write", os.WriteFile(kernel, []byte("kernel bytes"), 0o644))

	got, err := d.shareable(kernel, "test.a")
	mustDo(t, "shareable", err)
	if got == kernel || !strings.HasPrefix(got, filepath.Join(state, "images")+"/") {
		t.Fatalf("shareable(%s) = %s, want a copy under the state dir's images/", kernel, got)
	}
	if b, _ := os.ReadFile(got); string(b) != "kernel bytes" {
		t.Fatalf("the copy holds %q", b)
	}
	if !readableByOthers(got) {
		t.Fatalf("the copy %s is not readable by every user", got)
	}
	again, err := d.shareable(kernel, "test.b")
	mustDo(t, "shareable again", err)
	if again != got {
		t.Fatalf("a second call copied again: %s, then %s", got, again)
	}

	open := shortTempDir(t)
	mustDo(t, "chmod", os.Chmod(open, 0o755))
	inPlace := filepath.Join(open, "vmlinux")
	mustDo(t, "write", os.WriteFile(inPlace, []byte("k"), 0o644))
	if got, err := d.shareable(inPlace, "test.a"); err != nil || got != inPlace {
		t.Fatalf("shareable(%s) = %s, %v; want the file itself", inPlace, got, err)
	}

	// the copy lives as long as a VM uses it
	d.releaseCopies("test.a")
	if _, err := os.Stat(got); err != nil {
		t.Fatalf("the copy went while test.b uses it: %v", err)
	}
	d.releaseCopies("test.b")
	if _, err := os.Stat(got); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the copy stays once no VM uses it: %v", err)
	}
	if again, err := d.shareable(kernel, "test.c"); err != nil || again != got {
		t.Fatalf("copied again: %s, %v", again, err)
	}
}

// grantSearch opens root-owned directories above the state dir to search
// (o+x, nothing more) and refuses another owner's.
func TestGrantSearch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	d := &Driver{log: testLogger(t)}
	top := shortTempDir(t) // 0700, root's
	deep := filepath.Join(top, "a", "b")
	mustDo(t, "mkdir", os.MkdirAll(deep, 0o700))
	mustDo(t, "grantSearch", d.grantSearch(deep))
	for _, dir := range []string{top, filepath.Join(top, "a"), deep} {
		st, err := os.Stat(dir)
		mustDo(t, "stat", err)
		if st.Mode().Perm() != 0o701 {
			t.Errorf("%s: mode %o, want 0701 (search for others, nothing else)", dir, st.Mode().Perm())
		}
	}
	other := filepath.Join(top, "theirs")
	mustDo(t, "mkdir", os.Mkdir(other, 0o700))
	mustDo(t, "chown", os.Chown(other, 4242, 4242))
	if err := d.grantSearch(other); err == nil {
		t.Fatal("grantSearch changed a directory another user owns")
	}
}

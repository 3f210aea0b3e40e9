package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestImageDiskLinkedClone imports, through the CLI, an image directory
// holding the test guest's kernel and initrd and a raw disk that starts
// with a marker; the server converts the disk to qcow2, the QEMU host
// fetches the image into its cache, and the VM's first disk is a linked
// clone of the cached base: the guest reads the marker from /dev/vda.
func TestImageDiskLinkedClone(t *testing.T) {
	needBinary(t)
	needQEMU(t)
	guest := guestDir(t)
	dir := t.TempDir()
	s := startServer(t, filepath.Join(dir, "server"), freePort(t), freePort(t))
	agentDir := filepath.Join(dir, "q1")
	startProc(t, "agent-q1", nil, "agent", "--server", "https://"+s.agentAddr, "--state-dir", agentDir, "--name", "q1",
		"--driver", "qemu", "--join-token", s.joinToken(t))
	s.waitHosts(t, 1)
	pidFile := filepath.Join(agentDir, "qemu", "vms", "default.g1", "qemu.pid")
	t.Cleanup(func() {
		b, _ := os.ReadFile(pidFile)
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL) // a failed test must not leak a guest
		}
	})

	img := filepath.Join(dir, "withdisk")
	if err := os.MkdirAll(img, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vmlinux", "initramfs.cpio.gz", "cmdline"} {
		if err := os.Symlink(filepath.Join(guest, f), filepath.Join(img, f)); err != nil {
			t.Fatal(err)
		}
	}
	const marker = "vpool-image-disk-check"
	disk := make([]byte, 4<<20)
	copy(disk, marker+"\n")
	if err := os.WriteFile(filepath.Join(img, "disk.raw"), disk, 0o644); err != nil {
		t.Fatal(err)
	}
	s.cli(t, "image", "import", "withdisk", img)
	s.cli(t, "vm", "create", "g1", "--image", "withdisk", "--memory", "256MiB", "--timeout", "2m")

	cmd := exec.Command(bin, "vm", "console", "g1")
	cmd.Env = append(os.Environ(), "VPOOL_ADDR=http://"+s.addr, "VPOOL_TOKEN="+s.token)
	cmd.Stdin = strings.NewReader("head -c 22 /dev/vda; echo\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(marker+"\n")) && !bytes.Contains(out, []byte(marker+"\r\n")) {
		t.Fatalf("the guest did not read the image's disk: %v\n%s", err, out)
	}

	layers, _ := filepath.Glob(filepath.Join(agentDir, "qemu", "pools", "*", "default.g1", "*.0.qcow2"))
	if len(layers) != 1 {
		t.Fatalf("first disk layers: %v", layers)
	}
	info, err := exec.Command("qemu-img", "info", "-U", "--output=json", layers[0]).Output()
	if err != nil {
		t.Fatal(err)
	}
	var ii struct {
		Backing string `json:"backing-filename"`
		Format  string `json:"backing-filename-format"`
	}
	if err := json.Unmarshal(info, &ii); err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(ii.Backing) != filepath.Join(agentDir, "images") || ii.Format != "qcow2" {
		t.Fatalf("the first disk is not a linked clone of the cached qcow2 base: backing %q (%s)", ii.Backing, ii.Format)
	}
	s.cli(t, "vm", "delete", "g1", "--timeout", "2m")
	if out, _, err := s.cliResult("image", "delete", "withdisk"); err != nil {
		t.Fatalf("image delete once no VM uses it: %v\n%s", err, out)
	}
}

package nbd

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/testenv"
)

// serve exports a fresh 64 MiB qcow2 image through qemu-nbd (a real NBD
// server) after running setup on it with qemu-io / qemu-img.
func serve(t *testing.T, bitmap string, setup ...[]string) string {
	t.Helper()
	qemuImg := testenv.MustHaveTool(t, "qemu-img", "apt-get install qemu-utils")
	qemuNBD := testenv.MustHaveTool(t, "qemu-nbd", "apt-get install qemu-utils")
	dir := t.TempDir()
	img := filepath.Join(dir, "d.qcow2")
	if out, err := exec.Command(qemuImg, "create", "-q", "-f", "qcow2", img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v %s", err, out)
	}
	for _, s := range setup {
		args := append(append([]string{}, s[1:]...), img)
		if out, err := exec.Command(s[0], args...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", s, err, out)
		}
	}
	sock := filepath.Join(dir, "nbd.sock")
	args := []string{"-t", "-k", sock, "-f", "qcow2", "-x", "disk"}
	if bitmap != "" {
		args = append(args, "-B", bitmap)
	}
	cmd := exec.Command(qemuNBD, append(args, img)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("qemu-nbd did not create its socket")
	return ""
}

func dial(t *testing.T, sock string, metas ...string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, "unix", sock, Options{Export: "disk", MetaContexts: metas})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestReadHolesAndAllocation(t *testing.T) {
	sock := serve(t, "", []string{"qemu-io", "-c", "write -P 0x5a 1M 128k", "-c", "write -z 8M 1M"})
	c := dial(t, sock, BaseAllocation)
	if c.Size() != 64<<20 {
		t.Fatalf("size %d", c.Size())
	}
	ctx := context.Background()
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = 0xff
	}
	if err := c.ReadAt(ctx, buf, 1<<20-64<<10); err != nil {
		t.Fatal(err)
	}
	want := append(append(make([]byte, 64<<10), bytes.Repeat([]byte{0x5a}, 128<<10)...), make([]byte, 64<<10)...)
	if !bytes.Equal(buf, want) {
		t.Fatal("read does not match the pattern written around holes")
	}
	var data int64
	if err := c.Walk(ctx, BaseAllocation, func(off int64, e Extent) error {
		if e.Flags&StateHole == 0 {
			data += int64(e.Length)
			if off != 1<<20 {
				t.Errorf("data extent at %d, want %d", off, 1<<20)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if data != 128<<10 {
		t.Fatalf("allocated %d bytes, want %d", data, 128<<10)
	}
	if err := c.ReadAt(ctx, buf, 64<<20-1000); err == nil {
		t.Fatal("read past the end was not refused")
	}
	if err := c.WriteAt(ctx, buf[:10], 0); err != nil {
		t.Fatalf("write to a writable export: %v", err)
	}
}

func TestDirtyBitmapAfterWrites(t *testing.T) {
	sock := serveWithBitmap(t)
	c := dial(t, sock, BaseAllocation, DirtyBitmap("b1"))
	ctx := context.Background()
	var dirty [][2]int64
	if err := c.Walk(ctx, DirtyBitmap("b1"), func(off int64, e Extent) error {
		if e.Flags&StateDirty != 0 {
			dirty = append(dirty, [2]int64{off, int64(e.Length)})
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := [][2]int64{{2 << 20, 64 << 10}, {10 << 20, 192 << 10}}
	if len(dirty) != len(want) {
		t.Fatalf("dirty extents %v, want %v", dirty, want)
	}
	for i := range want {
		if dirty[i] != want[i] {
			t.Fatalf("dirty extents %v, want %v", dirty, want)
		}
	}
	if err := c.WriteZeroes(ctx, 0, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteAt(ctx, []byte("hello"), 100); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if err := c.ReadAt(ctx, buf, 0); err != nil {
		t.Fatal(err)
	}
	if string(buf[100:105]) != "hello" || buf[0] != 0 || buf[200] != 0 {
		t.Fatal("write or write-zeroes did not land")
	}
}

// serveWithBitmap: 4 MiB written, then a bitmap, then writes of 64 KiB at
// 2 MiB and 192 KiB at 10 MiB that the bitmap records.
func serveWithBitmap(t *testing.T) string {
	qemuImg := testenv.MustHaveTool(t, "qemu-img", "apt-get install qemu-utils")
	qemuIO := testenv.MustHaveTool(t, "qemu-io", "apt-get install qemu-utils")
	dir := t.TempDir()
	img := filepath.Join(dir, "pre.qcow2")
	run := func(name string, args ...string) {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v %s", name, args, err, out)
		}
	}
	run(qemuImg, "create", "-q", "-f", "qcow2", img, "64M")
	run(qemuIO, "-c", "write -P 0x11 0 4M", img)
	run(qemuImg, "bitmap", "--add", "-g", "64k", img, "b1")
	run(qemuIO, "-c", "write -P 0x22 2M 64k", "-c", "write -P 0x33 10M 192k", img)
	return serveFile(t, img, "b1")
}

func serveFile(t *testing.T, img, bitmap string) string {
	qemuNBD := testenv.MustHaveTool(t, "qemu-nbd", "apt-get install qemu-utils")
	sock := filepath.Join(filepath.Dir(img), "f.sock")
	cmd := exec.Command(qemuNBD, "-t", "-k", sock, "-f", "qcow2", "-x", "disk", "-B", bitmap, img)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("qemu-nbd did not create its socket")
	return ""
}

func TestUnknownMetaContextRefused(t *testing.T) {
	sock := serve(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := Dial(ctx, "unix", sock, Options{Export: "disk", MetaContexts: []string{DirtyBitmap("nope")}}); err == nil {
		t.Fatal("a missing dirty bitmap context was accepted")
	}
	if _, err := Dial(ctx, "unix", sock, Options{Export: "other"}); err == nil {
		t.Fatal("a missing export was accepted")
	}
}

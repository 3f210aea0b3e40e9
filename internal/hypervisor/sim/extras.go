package sim

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

var (
	_ hypervisor.DiskHotplugger = (*Driver)(nil)
	_ hypervisor.Console        = (*Driver)(nil)
)

// AttachDisk adds an empty disk; it counts against the host's disk.
func (d *Driver) AttachDisk(_ context.Context, id string, disk model.Disk) error {
	h := d.h
	if err := h.fail("attach", id); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("attach disk", id)
	if err != nil {
		return err
	}
	for _, have := range v.Config.Spec.Disks {
		if have.Name == disk.Name {
			return fmt.Errorf("sim: attach disk %s/%s: %w", id, disk.Name, hypervisor.ErrExists)
		}
	}
	want := model.Resources{Disk: v.Config.Spec.DiskSize() + disk.Size}
	if err := h.fitsLocked(id, want); err != nil {
		return err
	}
	v.Config.Spec.Disks = append(append([]model.Disk(nil), v.Config.Spec.Disks...), disk)
	return h.saveLocked()
}

// DetachDisk removes a disk other than the first.
func (d *Driver) DetachDisk(_ context.Context, id, name string) error {
	h := d.h
	if err := h.fail("detach", id); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("detach disk", id)
	if err != nil {
		return err
	}
	for i, have := range v.Config.Spec.Disks {
		if have.Name != name {
			continue
		}
		if i == 0 {
			return fmt.Errorf("sim: detach disk %s/%s: the boot disk cannot be detached: %w", id, name, hypervisor.ErrBadState)
		}
		v.Config.Spec.Disks = append(append([]model.Disk(nil), v.Config.Spec.Disks[:i]...), v.Config.Spec.Disks[i+1:]...)
		return h.saveLocked()
	}
	return fmt.Errorf("sim: detach disk %s/%s: %w", id, name, hypervisor.ErrNotFound)
}

// OpenConsole returns a console that greets with a prompt and echoes
// every line typed, like a shell that only runs echo.
func (d *Driver) OpenConsole(_ context.Context, id string) (io.ReadWriteCloser, error) {
	h := d.h
	h.mu.Lock()
	v, err := h.getLocked("console", id)
	running := err == nil && v.State == hypervisor.StateRunning
	h.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if !running {
		return nil, fmt.Errorf("sim: console %s: not running: %w", id, hypervisor.ErrBadState)
	}
	user, guest := net.Pipe()
	go func() {
		defer guest.Close()
		if _, err := io.WriteString(guest, "sim console of "+id+"\r\n# "); err != nil {
			return
		}
		var line bytes.Buffer
		buf := make([]byte, 1024)
		for {
			n, err := guest.Read(buf)
			if err != nil {
				return
			}
			for _, c := range buf[:n] {
				if c != '\n' && c != '\r' {
					line.WriteByte(c)
					continue
				}
				out := strings.TrimPrefix(line.String(), "echo ")
				line.Reset()
				if _, err := io.WriteString(guest, "\r\n"+out+"\r\n# "); err != nil {
					return
				}
			}
		}
	}()
	return user, nil
}

// ConsoleLog returns a boot banner: the simulated guest prints nothing else.
func (d *Driver) ConsoleLog(_ context.Context, id string, max int) ([]byte, error) {
	h := d.h
	h.mu.Lock()
	defer h.mu.Unlock()
	v, err := h.getLocked("console log", id)
	if err != nil {
		return nil, err
	}
	b := []byte(fmt.Sprintf("sim: %s booted at %s with %d vCPUs and %s\nVPOOL-GUEST-READY cpus=%d\n",
		id, v.StartedAt.UTC().Format("2006-01-02T15:04:05Z"), v.Config.Spec.VCPUs, v.Config.Spec.Memory, v.Config.Spec.VCPUs))
	if max > 0 && len(b) > max {
		b = b[len(b)-max:]
	}
	return b, nil
}

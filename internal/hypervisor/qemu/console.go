package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/vpool/vpool/internal/hypervisor"
)

var _ hypervisor.Console = (*Driver)(nil)

// OpenConsole connects to the serial console's socket chardev. QEMU
// serves one client at a time; a second waits until the first detaches.
func (d *Driver) OpenConsole(ctx context.Context, id string) (rwc io.ReadWriteCloser, err error) {
	defer d.public(&err, "open console", id)
	v, err := d.get(id)
	if err != nil {
		return nil, err
	}
	// Only a read of the state: do not wait behind a long operation.
	if in := v.info.Load(); v.mu.TryLock() {
		running := v.proc != nil && !v.deleted
		v.mu.Unlock()
		if !running {
			return nil, fmt.Errorf("qemu: console of %s: not running: %w", id, hypervisor.ErrBadState)
		}
	} else if in != nil && in.State != hypervisor.StateRunning && in.State != hypervisor.StatePaused {
		return nil, fmt.Errorf("qemu: console of %s: not running: %w", id, hypervisor.ErrBadState)
	}
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", d.ConsoleSocket(id))
	if err != nil {
		return nil, fmt.Errorf("qemu: console of %s: %w", id, err)
	}
	return c, nil
}

// ConsoleLog returns up to max bytes of the end of this boot's serial log
// (the previous boot's when none has started since).
func (d *Driver) ConsoleLog(_ context.Context, id string, max int) (out []byte, err error) {
	defer d.public(&err, "console log", id)
	if _, err := d.get(id); err != nil {
		return nil, err
	}
	f, err := os.Open(d.SerialLog(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // never booted
	}
	if err != nil {
		return nil, fmt.Errorf("qemu: console log of %s: %w", id, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("qemu: console log of %s: %w", id, err)
	}
	off := int64(0)
	if max > 0 && st.Size() > int64(max) {
		off = st.Size() - int64(max)
	}
	b := make([]byte, st.Size()-off)
	n, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("qemu: console log of %s: %w", id, err)
	}
	return b[:n], nil
}

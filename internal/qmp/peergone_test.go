package qmp

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
)

// A write to a QEMU that died fails with EPIPE or ECONNRESET before a read
// sees the end: it must say ErrClosed too (CI: a source QEMU killed mid-
// migration was reported as a plain write error, not as a dead source).
func TestWriteToAGoneQEMUIsErrClosed(t *testing.T) {
	for _, cause := range []error{syscall.EPIPE, syscall.ECONNRESET, net.ErrClosed} {
		err := peerGone(&net.OpError{Op: "write", Net: "unix", Err: os.NewSyscallError("write", cause)})
		if cause == net.ErrClosed {
			err = peerGone(&net.OpError{Op: "write", Net: "unix", Err: cause})
		}
		if !errors.Is(err, ErrClosed) || !errors.Is(err, cause) {
			t.Errorf("%v: %v, want ErrClosed wrapping it", cause, err)
		}
	}
	if err := peerGone(syscall.EINVAL); errors.Is(err, ErrClosed) {
		t.Errorf("EINVAL became %v", err)
	}
	if peerGone(nil) != nil {
		t.Error("nil became an error")
	}
}

package qemu

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/vpool/vpool/internal/qmp"
)

// The memory stream's connection. A single-stream migration's
// connection is dialled here, with a bounded send buffer, and handed to
// the source QEMU (getfd, "migrate" to fd:): QEMU's own connect leaves
// the kernel to grow the send buffer up to net.ipv4.tcp_wmem's maximum
// (4 MiB here), and that is what bounded the idle guest's downtime.
//
// At the switch-over the source stops the guest and flushes every disk,
// the disk mirror's NBD node too; the target's NBD server runs in the
// target QEMU's main loop, which is also where the incoming stream
// loads, and that coroutine yields to the main loop only when the
// socket has nothing more to read. So the NBD FLUSH was read only once
// the target had loaded everything the source had queued before the
// stop: with a few MiB of zero-page headers in the source's send buffer
// that was 2–40 ms, two thirds of an idle 1 GiB guest's downtime and all
// of its spread (docs/migration-slo.md, "Where an idle guest's downtime
// goes"). With at most streamSendBuffer queued (the kernel doubles the
// value) the target reaches the FLUSH within a millisecond or two.
//
// The flush itself, and with it the guarantee that every write the guest
// made on the source is durable on the target before the target runs the
// guest, is unchanged: only the time it waits in the target's queue is.
// multifd's channels are QEMU's to connect (QEMU 10.0 refuses a socket fd
// with multifd), and a post-copy recovery's new stream is too: those keep
// QEMU's own connect.

// streamSendBuffer is the memory stream's SO_SNDBUF. 128 KiB (256 KiB
// once doubled) bounded the FLUSH's wait as well as 64 KiB did on the
// 2-core machine, and one TLS stream under TCG still moved 150–265 MiB/s
// with it (the same as with the kernel's autotuning); on a real network
// it is enough for ~2.5 GB/s at 100 µs of round trip.
const streamSendBuffer = 128 << 10

// streamFD names the memory stream's socket in the source QEMU.
const streamFD = "vpool-stream"

// dialStream connects to the target's memory-stream port with the
// bounded send buffer and returns the connection as a file for getfd
// (the net.Conn itself is closed: the file holds the socket).
func dialStream(ctx context.Context, host string, port int) (*os.File, error) {
	var serr error
	dl := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, streamSendBuffer)
		}); err != nil {
			return err
		}
		return serr
	}}
	conn, err := dl.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("qemu: connecting the memory stream: %w", err)
	}
	defer conn.Close()
	f, err := conn.(*net.TCPConn).File()
	if err != nil {
		return nil, fmt.Errorf("qemu: the memory stream's socket: %w", err)
	}
	return f, nil
}

// streamURI is the "migrate" URI of the memory stream: over a
// connection dialled here for a single stream, QEMU's own for multifd.
// The returned func releases this process's copy of the socket (QEMU
// holds its own once getfd is done) and, when "migrate" failed (unused
// true), QEMU's too, which "migrate" did not take.
func (m *outgoing) streamURI(ctx context.Context) (string, func(unused bool), error) {
	tcp := "tcp:" + net.JoinHostPort(m.a.host, strconv.Itoa(m.a.mig))
	if m.res.MultifdChannels > 1 {
		return tcp, func(bool) {}, nil
	}
	f, err := dialStream(ctx, m.a.host, m.a.mig)
	if err != nil {
		return "", func(bool) {}, err
	}
	if err := m.p.qmp.Getfd(ctx, streamFD, f); err != nil {
		f.Close()
		return "", func(bool) {}, err
	}
	return "fd:" + streamFD, func(unused bool) {
		f.Close()
		if unused {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			m.p.qmp.Execute(cctx, "closefd", qmp.Args{"fdname": streamFD}, nil)
		}
	}, nil
}

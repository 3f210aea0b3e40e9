package qemu

import (
	"bytes"
	"context"
	"io"
	"net"
	"syscall"
	"testing"
)

// TestDialStreamBoundsTheSendBuffer: the memory stream's connection
// carries data and its send buffer is streamSendBuffer (doubled by the
// kernel), not the kernel's autotuned one, which grows to tcp_wmem's
// maximum and let the source queue the backlog the target's NBD FLUSH
// waited behind (migrate_stream.go).
func TestDialStreamBoundsTheSendBuffer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustDo(t, "listen", err)
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	f, err := dialStream(context.Background(), "127.0.0.1", ln.Addr().(*net.TCPAddr).Port)
	mustDo(t, "dialStream", err)
	// The kernel's autotuning grows the buffer as a stream runs: send
	// one first (a migration's first pass).
	data := bytes.Repeat([]byte("QEVM"), 16<<20/4)
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	sndbuf, err := syscall.GetsockoptInt(int(f.Fd()), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	mustDo(t, "getsockopt", err)
	if sndbuf > 2*streamSendBuffer {
		t.Errorf("SO_SNDBUF = %d after 16 MiB, want at most %d (streamSendBuffer doubled)", sndbuf, 2*streamSendBuffer)
	}
	f.Close()
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("the target read %d bytes, want the %d sent", len(b), len(data))
	}
}

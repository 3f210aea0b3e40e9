package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// fakeAgent answers on a unix socket like qemu-ga behind a chardev:
// stale is written first (what an earlier client left in the channel),
// 0xFF bytes reset the parser, and each request gets handle's answer.
func fakeAgent(t *testing.T, stale string, handle func(cmd string, args json.RawMessage) string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qga.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte(stale))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadBytes('\n')
					if err != nil {
						return
					}
					var req struct {
						Execute   string          `json:"execute"`
						Arguments json.RawMessage `json:"arguments"`
					}
					if json.Unmarshal(bytes.TrimLeft(line, "\xff"), &req) != nil {
						continue
					}
					if ans := handle(req.Execute, req.Arguments); ans != "" {
						c.Write([]byte(ans + "\n"))
					}
				}
			}()
		}
	}()
	return path
}

func TestGuestAgent(t *testing.T) {
	frozen := 0
	handle := func(cmd string, args json.RawMessage) string {
		switch cmd {
		case "guest-sync-delimited":
			var a struct{ ID int64 }
			json.Unmarshal(args, &a)
			// an answer for another client first, then ours
			return fmt.Sprintf("\xff{\"return\": 7}\n\xff{\"return\": %d}", a.ID)
		case "guest-ping":
			return `{"return": {}}`
		case "guest-fsfreeze-freeze":
			frozen = 2
			return `{"return": 2}`
		case "guest-fsfreeze-status":
			if frozen > 0 {
				return `{"return": "frozen"}`
			}
			return `{"return": "thawed"}`
		case "guest-fsfreeze-thaw":
			n := frozen
			frozen = 0
			return fmt.Sprintf(`{"return": %d}`, n)
		case "guest-exec":
			return `{"return": {"pid": 42}}`
		case "guest-exec-status":
			return `{"return": {"exited": true, "exitcode": 3, "out-data": "aGVsbG8="}}`
		}
		return `{"error": {"class": "CommandNotFound", "desc": "The command ` + cmd + ` has not been found"}}`
	}
	path := fakeAgent(t, `{"return": {}}`+"\n{\"return\": 1", handle)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g, err := DialGuestAgent(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := g.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	if n, err := g.FSFreeze(ctx); err != nil || n != 2 {
		t.Fatalf("freeze = %d, %v; want 2", n, err)
	}
	if s, err := g.FSFreezeStatus(ctx); err != nil || s != "frozen" {
		t.Fatalf("status = %q, %v; want frozen", s, err)
	}
	if n, err := g.FSThaw(ctx); err != nil || n != 2 {
		t.Fatalf("thaw = %d, %v; want 2", n, err)
	}
	res, err := g.Exec(ctx, "/bin/true")
	if err != nil || res.ExitCode != 3 || string(res.Stdout) != "hello" {
		t.Fatalf("exec = %+v, %v", res, err)
	}
	err = g.Execute(ctx, "guest-nope", nil, nil)
	if !IsClass(err, "CommandNotFound") {
		t.Fatalf("unknown command: %v, want CommandNotFound", err)
	}
	// An error answer leaves the stream in step.
	if err := g.Ping(ctx); err != nil {
		t.Fatalf("ping after an error: %v", err)
	}
}

func TestGuestAgentSilentTimesOut(t *testing.T) {
	// A channel with no agent behind it (the guest never started one)
	// accepts the connection and never answers.
	path := fakeAgent(t, "", func(string, json.RawMessage) string { return "" })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := DialGuestAgent(ctx, path)
	var ne net.Error
	if err == nil || !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("dial a silent agent: %v, want a timeout", err)
	}
}

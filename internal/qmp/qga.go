package qmp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// The QEMU guest agent protocol (QGA): the agent inside the guest
// (qemu-ga) speaks QMP-shaped JSON over a virtio-serial port whose host
// end is a QEMU chardev — for vpool a unix socket per VM. Unlike QMP
// there is no greeting, no ids and no events: one request, one answer,
// in order. A client cannot know what an earlier client left in the
// channel (a half-read answer, a request the agent never saw), so every
// session starts with guest-sync-delimited: the client sends 0xFF (which
// resets the agent's JSON parser) and the command with a random id; the
// agent answers 0xFF followed by the id, and the client drops everything
// before it. A guest without a running agent never answers: every call
// needs a deadline (the context's, or DefaultGuestAgentTimeout).

// DefaultGuestAgentTimeout bounds a guest-agent command whose context
// has no deadline.
const DefaultGuestAgentTimeout = 10 * time.Second

// ErrGuestAgentBroken: an earlier command timed out or failed midway, so
// the stream's state is unknown; dial again.
var ErrGuestAgentBroken = errors.New("qmp: guest agent connection is out of step (an earlier command did not finish); dial again")

// GuestAgent is one connection to a VM's guest-agent channel. Commands
// are serialised (the protocol has no ids).
type GuestAgent struct {
	mu     sync.Mutex
	nc     net.Conn
	r      *bufio.Reader
	broken bool
}

// DialGuestAgent connects to the chardev socket of a guest-agent
// channel and synchronises with the agent (guest-sync-delimited). It
// fails when the guest has no agent answering within ctx's deadline.
func DialGuestAgent(ctx context.Context, path string) (*GuestAgent, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: guest agent: dial %s: %w", path, err)
	}
	g := NewGuestAgent(nc)
	if err := g.Sync(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return g, nil
}

// NewGuestAgent wraps a connected stream (no synchronisation yet: call
// Sync first).
func NewGuestAgent(nc net.Conn) *GuestAgent {
	return &GuestAgent{nc: nc, r: bufio.NewReader(nc)}
}

// Close closes the connection.
func (g *GuestAgent) Close() error { return g.nc.Close() }

// deadline applies ctx's deadline (or the default) to the connection and
// returns a func that clears it; cancelling ctx unblocks the I/O.
func (g *GuestAgent) deadline(ctx context.Context) func() {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(DefaultGuestAgentTimeout)
	}
	g.nc.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { g.nc.SetDeadline(time.Now()) })
	return func() {
		stop()
		g.nc.SetDeadline(time.Time{})
	}
}

// Sync resets the channel: it sends 0xFF and guest-sync-delimited with a
// random id, then drops everything up to the agent's 0xFF and answers
// until the one carrying that id.
func (g *GuestAgent) Sync(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	defer g.deadline(ctx)()
	id := rand.Int64N(1 << 52)
	req, _ := json.Marshal(map[string]any{"execute": "guest-sync-delimited", "arguments": map[string]any{"id": id}})
	if _, err := g.nc.Write(append([]byte{0xFF}, append(req, '\n')...)); err != nil {
		g.broken = true
		return fmt.Errorf("qmp: guest agent: sync: %w", err)
	}
	for {
		if _, err := g.r.ReadBytes(0xFF); err != nil {
			g.broken = true
			return fmt.Errorf("qmp: guest agent: sync: no answer: %w", err)
		}
		line, err := g.r.ReadBytes('\n')
		if err != nil {
			g.broken = true
			return fmt.Errorf("qmp: guest agent: sync: %w", err)
		}
		var resp struct {
			Return *int64 `json:"return"`
		}
		if json.Unmarshal(bytes.TrimLeft(line, "\xff"), &resp) == nil && resp.Return != nil && *resp.Return == id {
			g.broken = false
			return nil
		}
		// an answer to an earlier client, or a delimiter inside one: go on
	}
}

// Execute runs one guest-agent command and decodes its return value into
// out (nil discards it). A QGA error comes back as *Error.
func (g *GuestAgent) Execute(ctx context.Context, cmd string, args, out any) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.broken {
		return ErrGuestAgentBroken
	}
	defer g.deadline(ctx)()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("qmp: guest agent: %s: %w", cmd, err)
	}
	if _, err := g.nc.Write(append(b, '\n')); err != nil {
		g.broken = true
		return fmt.Errorf("qmp: guest agent: %s: %w", cmd, err)
	}
	for {
		line, err := g.r.ReadBytes('\n')
		if err != nil {
			g.broken = true
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("qmp: guest agent: %s: %w", cmd, err)
		}
		line = bytes.TrimSpace(bytes.TrimLeft(line, "\xff"))
		if len(line) == 0 {
			continue
		}
		var resp struct {
			Return json.RawMessage `json:"return"`
			Error  *struct {
				Class string `json:"class"`
				Desc  string `json:"desc"`
			} `json:"error"`
		}
		if err := json.Unmarshal(line, &resp); err != nil {
			g.broken = true
			return fmt.Errorf("qmp: guest agent: %s: bad answer %.80q: %w", cmd, line, err)
		}
		if resp.Error != nil {
			return &Error{Command: cmd, Class: resp.Error.Class, Desc: resp.Error.Desc}
		}
		if out != nil && resp.Return != nil {
			if err := json.Unmarshal(resp.Return, out); err != nil {
				return fmt.Errorf("qmp: guest agent: %s: decoding the answer: %w", cmd, err)
			}
		}
		return nil
	}
}

// Ping is guest-ping: nil when the agent answers.
func (g *GuestAgent) Ping(ctx context.Context) error { return g.Execute(ctx, "guest-ping", nil, nil) }

// FSFreeze is guest-fsfreeze-freeze: the agent flushes and freezes every
// freezable mounted file system and returns how many it froze.
func (g *GuestAgent) FSFreeze(ctx context.Context) (int, error) {
	var n int
	err := g.Execute(ctx, "guest-fsfreeze-freeze", nil, &n)
	return n, err
}

// FSThaw is guest-fsfreeze-thaw: it returns how many file systems it
// thawed (0 when none was frozen).
func (g *GuestAgent) FSThaw(ctx context.Context) (int, error) {
	var n int
	err := g.Execute(ctx, "guest-fsfreeze-thaw", nil, &n)
	return n, err
}

// FSFreezeStatus is guest-fsfreeze-status: "thawed" or "frozen".
func (g *GuestAgent) FSFreezeStatus(ctx context.Context) (string, error) {
	var s string
	err := g.Execute(ctx, "guest-fsfreeze-status", nil, &s)
	return s, err
}

// ExecResult is a finished guest-exec.
type ExecResult struct {
	ExitCode int
	Stdout   []byte
	Stderr   []byte
}

// Exec runs path with args in the guest (guest-exec, output captured)
// and polls guest-exec-status until it exits or ctx ends.
func (g *GuestAgent) Exec(ctx context.Context, path string, args ...string) (ExecResult, error) {
	var started struct {
		PID int `json:"pid"`
	}
	if args == nil {
		args = []string{}
	}
	if err := g.Execute(ctx, "guest-exec", map[string]any{"path": path, "arg": args, "capture-output": true}, &started); err != nil {
		return ExecResult{}, err
	}
	for {
		var st struct {
			Exited   bool   `json:"exited"`
			ExitCode int    `json:"exitcode"`
			Signal   int    `json:"signal"`
			Out      string `json:"out-data"`
			Err      string `json:"err-data"`
		}
		if err := g.Execute(ctx, "guest-exec-status", map[string]any{"pid": started.PID}, &st); err != nil {
			return ExecResult{}, err
		}
		if st.Exited {
			res := ExecResult{ExitCode: st.ExitCode}
			res.Stdout, _ = base64.StdEncoding.DecodeString(st.Out)
			res.Stderr, _ = base64.StdEncoding.DecodeString(st.Err)
			if st.Signal != 0 {
				return res, fmt.Errorf("qmp: guest agent: %s killed by signal %d", path, st.Signal)
			}
			return res, nil
		}
		select {
		case <-ctx.Done():
			return ExecResult{}, fmt.Errorf("qmp: guest agent: %s still running: %w", path, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

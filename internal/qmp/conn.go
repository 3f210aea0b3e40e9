package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Options tune a connection. The zero value is usable.
type Options struct {
	// Logger receives debug traces of commands and events; nil discards.
	Logger *slog.Logger
	// EventBuffer is the channel capacity of each subscription
	// (default 64). A subscriber that falls further behind loses events
	// (counted by Subscription.Dropped) rather than stalling replies.
	EventBuffer int
	// OOB negotiates out-of-band execution when QEMU offers it, for
	// ExecuteOOB: commands that must run while QEMU's main loop is
	// blocked (migrate-recover when a post-copy guest waits for a page
	// with the big lock held).
	OOB bool
	// CommandTimeout bounds a command whose context has no deadline
	// (default DefaultCommandTimeout), so that no command waits forever
	// on a monitor that never answers (a stopped or stuck QEMU).
	CommandTimeout time.Duration
}

// ErrNoOOB is returned by ExecuteOOB on a connection without out-of-band
// execution (not asked for, or not offered by QEMU).
var ErrNoOOB = errors.New("qmp: out-of-band execution not negotiated")

// DefaultCommandTimeout is Options.CommandTimeout's default.
const DefaultCommandTimeout = time.Minute

// Conn is one QMP connection. It is safe for concurrent use: commands
// from several goroutines are multiplexed by id.
type Conn struct {
	nc      net.Conn
	log     *slog.Logger
	version Version
	evBuf   int
	oob     bool          // out-of-band execution negotiated
	timeout time.Duration // Options.CommandTimeout

	wmu sync.Mutex // serialises writes

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan reply
	subs    map[*Subscription]struct{}
	closed  bool
	cause   error

	done       chan struct{}
	readerDone chan struct{}
}

type reply struct {
	ret json.RawMessage
	err *Error
}

// Dial connects to the QMP unix socket at path, reads the greeting and
// negotiates capabilities. ctx bounds the whole handshake.
func Dial(ctx context.Context, path string, opts Options) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", path, err)
	}
	c, err := NewConn(ctx, nc, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// NewConn runs the QMP handshake on an established connection and returns
// the ready client. On error the caller still owns nc.
func NewConn(ctx context.Context, nc net.Conn, opts Options) (*Conn, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.EventBuffer <= 0 {
		opts.EventBuffer = 64
	}
	if opts.CommandTimeout <= 0 {
		opts.CommandTimeout = DefaultCommandTimeout
	}
	c := &Conn{
		nc:         nc,
		log:        log,
		evBuf:      opts.EventBuffer,
		timeout:    opts.CommandTimeout,
		pending:    map[uint64]chan reply{},
		subs:       map[*Subscription]struct{}{},
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	dec := json.NewDecoder(nc)
	// The greeting is read synchronously, bounded by ctx.
	stop := context.AfterFunc(ctx, func() { nc.SetReadDeadline(time.Unix(1, 0)) })
	var raw json.RawMessage
	err := dec.Decode(&raw)
	if !stop() {
		return nil, fmt.Errorf("qmp: greeting: %w", ctx.Err())
	}
	if err != nil {
		return nil, fmt.Errorf("qmp: greeting: %w", err)
	}
	m, err := decodeMessage(raw)
	if err != nil {
		return nil, fmt.Errorf("qmp: greeting: %w", err)
	}
	if m.kind != kindGreeting {
		return nil, fmt.Errorf("%w: expected a greeting, got %.100s", ErrProtocol, raw)
	}
	c.version = m.version
	go c.readLoop(dec)
	var caps any
	if opts.OOB && m.oob {
		caps = map[string]any{"enable": []string{"oob"}}
	}
	if err := c.Execute(ctx, "qmp_capabilities", caps, nil); err != nil {
		c.shutdown(err)
		<-c.readerDone
		return nil, err
	}
	c.oob = caps != nil
	return c, nil
}

// Version is the QEMU version from the greeting.
func (c *Conn) Version() Version { return c.version }

// Done is closed when the connection is closed (by Close or by the peer).
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection closed, or nil while it is open.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// Close closes the connection; pending commands fail with ErrClosed.
func (c *Conn) Close() error {
	c.shutdown(nil)
	<-c.readerDone
	return nil
}

func (c *Conn) shutdown(cause error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if cause == nil || errors.Is(cause, io.EOF) || errors.Is(cause, net.ErrClosed) {
		c.cause = ErrClosed
	} else {
		c.cause = fmt.Errorf("%w: %w", ErrClosed, cause)
	}
	for s := range c.subs {
		close(s.ch)
		delete(c.subs, s)
	}
	c.pending = map[uint64]chan reply{}
	close(c.done)
	c.mu.Unlock()
	c.nc.Close()
}

func (c *Conn) readLoop(dec *json.Decoder) {
	defer close(c.readerDone)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			c.shutdown(err)
			return
		}
		m, err := decodeMessage(raw)
		if err != nil {
			c.log.Warn("qmp: dropping undecodable message", "err", err)
			continue
		}
		switch m.kind {
		case kindEvent:
			c.dispatch(m.event)
		case kindReturn, kindError:
			if !m.hasID {
				c.log.Warn("qmp: reply without our id", "msg", string(raw))
				continue
			}
			c.mu.Lock()
			ch := c.pending[m.id]
			delete(c.pending, m.id)
			c.mu.Unlock()
			if ch != nil {
				ch <- reply{ret: m.ret, err: m.err}
			}
		case kindGreeting:
			c.log.Warn("qmp: unexpected second greeting")
		}
	}
}

// Execute runs cmd with args (nil for none) and decodes the return value
// into out (nil to ignore it). ctx bounds the wait for the reply (and the
// write of the command); without a deadline, Options.CommandTimeout does.
// A command that times out is abandoned (its late reply is discarded),
// and the error wraps ctx.Err() (context.DeadlineExceeded for the
// default bound). A QMP error reply is returned as *Error.
func (c *Conn) Execute(ctx context.Context, cmd string, args, out any) error {
	return c.execute(ctx, cmd, args, out, nil)
}

// ExecuteWithFile is Execute that passes f's descriptor along with the
// command (SCM_RIGHTS), as getfd and add-fd expect.
func (c *Conn) ExecuteWithFile(ctx context.Context, cmd string, args, out any, f *os.File) error {
	return c.execute(ctx, cmd, args, out, f)
}

// ExecuteOOB is Execute out of band: QEMU runs cmd in its monitor thread
// at once, even while its main loop is blocked. Only commands QEMU marks
// allow-oob can; without Options.OOB (or a QEMU that offers it) it
// returns ErrNoOOB.
func (c *Conn) ExecuteOOB(ctx context.Context, cmd string, args, out any) error {
	if !c.oob {
		return fmt.Errorf("qmp: %s: %w", cmd, ErrNoOOB)
	}
	return c.send(ctx, request{ExecOOB: cmd, Arguments: args}, out, nil)
}

func (c *Conn) execute(ctx context.Context, cmd string, args, out any, f *os.File) error {
	return c.send(ctx, request{Execute: cmd, Arguments: args}, out, f)
}

func (c *Conn) send(ctx context.Context, req request, out any, f *os.File) error {
	cmd := req.Execute + req.ExecOOB
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.closed {
		err := c.cause
		c.mu.Unlock()
		return fmt.Errorf("qmp: %s: %w", cmd, err)
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()

	req.ID = id
	if err := c.write(ctx, req, f); err != nil {
		c.forget(id)
		return fmt.Errorf("qmp: %s: %w", cmd, err)
	}
	c.log.Debug("qmp: command", "cmd", cmd, "id", id)
	select {
	case r := <-ch:
		if r.err != nil {
			e := *r.err
			e.Command = cmd
			return &e
		}
		if out != nil && len(r.ret) > 0 {
			if err := json.Unmarshal(r.ret, out); err != nil {
				return fmt.Errorf("qmp: %s: decoding reply: %w", cmd, err)
			}
		}
		return nil
	case <-ctx.Done():
		c.forget(id)
		return fmt.Errorf("qmp: %s: %w", cmd, ctx.Err())
	case <-c.done:
		return fmt.Errorf("qmp: %s: %w", cmd, c.Err())
	}
}

func (c *Conn) forget(id uint64) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

func (c *Conn) write(ctx context.Context, req request, f *os.File) error {
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encoding arguments: %w", err)
	}
	b = append(b, '\n')
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		c.nc.SetWriteDeadline(dl)
		defer c.nc.SetWriteDeadline(time.Time{})
	}
	if f == nil {
		_, err = c.nc.Write(b)
		return peerGone(err)
	}
	uc, ok := c.nc.(*net.UnixConn)
	if !ok {
		return errors.New("passing a file needs a unix socket")
	}
	_, _, err = uc.WriteMsgUnix(b, syscall.UnixRights(int(f.Fd())), nil)
	return peerGone(err)
}

// peerGone wraps ErrClosed around a write that failed because QEMU's end
// is gone (it died or quit), as a read that meets the end says: callers
// tell a dead QEMU by ErrClosed whichever of the two noticed first.
func peerGone(err error) error {
	if err != nil && (errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

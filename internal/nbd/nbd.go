// Package nbd is a client of the Network Block Device protocol
// (fixed newstyle handshake, structured replies, metadata contexts),
// written from the protocol document: enough to read a QEMU export
// point-in-time with its dirty bitmap (NBD_CMD_BLOCK_STATUS on
// "base:allocation" and "qemu:dirty-bitmap:NAME") and to write a disk
// image through a writable export (WRITE, WRITE_ZEROES, FLUSH).
//
// One request is in flight at a time. It imports only the standard
// library and knows nothing of QEMU's QMP or of vpool.
package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Sentinel errors.
var (
	// ErrProtocol: the server broke the protocol (bad magic, a reply out
	// of place); the connection is unusable afterwards.
	ErrProtocol = errors.New("nbd: protocol error")
	// ErrUnsupported: the server lacks an option the caller asked for
	// (structured replies, a metadata context, writes).
	ErrUnsupported = errors.New("nbd: not supported by the server")
	// ErrClosed: the connection is closed.
	ErrClosed = errors.New("nbd: connection closed")
)

// Protocol constants (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md).
const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic        = 0x49484156454f5054 // "IHAVEOPT"
	repMagic        = 0x3e889045565a9
	requestMagic    = 0x25609513
	simpleMagic     = 0x67446698
	structuredMagic = 0x668e33ef

	flagFixedNewstyle = 1
	flagNoZeroes      = 2

	optGo               = 7
	optStructuredReply  = 8
	optSetMetaContext   = 10
	repAck              = 1
	repInfo             = 3
	repMetaContext      = 4
	repErrBit           = 1 << 31
	infoExport          = 0
	transFlagReadOnly   = 1 << 1
	transFlagSendFlush  = 1 << 2
	transFlagWriteZeros = 1 << 6

	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdWriteZeroes = 6
	cmdBlockStatus = 7

	replyFlagDone      = 1
	replyNone          = 0
	replyOffsetData    = 1
	replyOffsetHole    = 2
	replyBlockStatus   = 5
	replyErrorBit      = 1 << 15
	replyErrorOffset   = replyErrorBit + 2
	maxStructuredChunk = 64 << 20
)

// MaxRequest is the largest read or write one request carries (QEMU
// refuses more than 32 MiB).
const MaxRequest = 32 << 20

// Context names.
const (
	// BaseAllocation describes holes (StateHole) and zeroes (StateZero).
	BaseAllocation = "base:allocation"
	// StateHole and StateZero are the flags of BaseAllocation extents.
	StateHole = 1
	StateZero = 2
	// StateDirty is the flag of a dirty-bitmap extent.
	StateDirty = 1
)

// DirtyBitmap names the metadata context of a QEMU dirty bitmap.
func DirtyBitmap(name string) string { return "qemu:dirty-bitmap:" + name }

// Extent is one run of a metadata context: Length bytes sharing Flags.
type Extent struct {
	Length uint32
	Flags  uint32
}

// Error is an error the server answered a command with.
type Error struct {
	Command string
	Errno   uint32
	Msg     string
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("nbd: %s: error %d: %s", e.Command, e.Errno, e.Msg)
	}
	return fmt.Sprintf("nbd: %s: error %d", e.Command, e.Errno)
}

// Options of Dial.
type Options struct {
	// Export is the export name.
	Export string
	// MetaContexts are the metadata contexts to negotiate (BaseAllocation,
	// DirtyBitmap(name)); each must be offered by the server.
	MetaContexts []string
}

// Client is one connection to one export.
type Client struct {
	conn  net.Conn
	r     *bufio.Reader
	mu    sync.Mutex
	size  int64
	flags uint16
	ctxID map[string]uint32
	seq   uint64
	dead  error
}

// Dial connects to network/addr ("unix", path or "tcp", host:port) and
// negotiates opts. ctx bounds the handshake.
func Dial(ctx context.Context, network, addr string, opts Options) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbd: dial: %w", err)
	}
	c := &Client{conn: conn, r: bufio.NewReaderSize(conn, 256<<10), ctxID: map[string]uint32{}}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if err := c.handshake(opts); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return c, nil
}

// Size is the export's size in bytes.
func (c *Client) Size() int64 { return c.size }

// ReadOnly reports whether the export refuses writes.
func (c *Client) ReadOnly() bool { return c.flags&transFlagReadOnly != 0 }

func (c *Client) handshake(opts Options) error {
	var hdr struct {
		Magic, Opt uint64
		Flags      uint16
	}
	if err := binary.Read(c.r, binary.BigEndian, &hdr); err != nil {
		return fmt.Errorf("nbd: greeting: %w", err)
	}
	if hdr.Magic != nbdMagic || hdr.Opt != optMagic || hdr.Flags&flagFixedNewstyle == 0 {
		return fmt.Errorf("%w: not a fixed-newstyle NBD server", ErrProtocol)
	}
	cf := uint32(flagFixedNewstyle)
	if hdr.Flags&flagNoZeroes != 0 {
		cf |= flagNoZeroes
	}
	if err := binary.Write(c.conn, binary.BigEndian, cf); err != nil {
		return fmt.Errorf("nbd: handshake: %w", err)
	}
	if err := c.option(optStructuredReply, nil, nil); err != nil {
		return fmt.Errorf("%w: structured replies: %v", ErrUnsupported, err)
	}
	if len(opts.MetaContexts) > 0 {
		if err := c.setMeta(opts); err != nil {
			return err
		}
	}
	return c.goExport(opts.Export)
}

// option sends one option and reads its replies up to the final one;
// each non-final reply goes to each (when not nil).
func (c *Client) option(opt uint32, data []byte, each func(typ uint32, data []byte) error) error {
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	if _, err := c.conn.Write(append(b, data...)); err != nil {
		return fmt.Errorf("nbd: option %d: %w", opt, err)
	}
	for {
		var rep struct {
			Magic    uint64
			Opt, Typ uint32
			Len      uint32
		}
		if err := binary.Read(c.r, binary.BigEndian, &rep); err != nil {
			return fmt.Errorf("nbd: option %d reply: %w", opt, err)
		}
		if rep.Magic != repMagic || rep.Opt != opt || rep.Len > 1<<20 {
			return fmt.Errorf("%w: bad reply to option %d", ErrProtocol, opt)
		}
		body := make([]byte, rep.Len)
		if _, err := io.ReadFull(c.r, body); err != nil {
			return fmt.Errorf("nbd: option %d reply: %w", opt, err)
		}
		switch {
		case rep.Typ&repErrBit != 0:
			return &Error{Command: fmt.Sprintf("option %d", opt), Errno: rep.Typ, Msg: string(body)}
		case rep.Typ == repAck:
			return nil
		case each != nil:
			if err := each(rep.Typ, body); err != nil {
				return err
			}
		}
	}
}

func appendString32(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func (c *Client) setMeta(opts Options) error {
	b := appendString32(nil, opts.Export)
	b = binary.BigEndian.AppendUint32(b, uint32(len(opts.MetaContexts)))
	for _, m := range opts.MetaContexts {
		b = appendString32(b, m)
	}
	err := c.option(optSetMetaContext, b, func(typ uint32, data []byte) error {
		if typ == repMetaContext && len(data) >= 4 {
			c.ctxID[string(data[4:])] = binary.BigEndian.Uint32(data)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("nbd: metadata contexts: %w", err)
	}
	for _, m := range opts.MetaContexts {
		if _, ok := c.ctxID[m]; !ok {
			return fmt.Errorf("%w: metadata context %q", ErrUnsupported, m)
		}
	}
	return nil
}

func (c *Client) goExport(name string) error {
	b := appendString32(nil, name)
	b = binary.BigEndian.AppendUint16(b, 0) // no extra information requests
	got := false
	err := c.option(optGo, b, func(typ uint32, data []byte) error {
		if typ == repInfo && len(data) >= 12 && binary.BigEndian.Uint16(data) == infoExport {
			c.size = int64(binary.BigEndian.Uint64(data[2:]))
			c.flags = binary.BigEndian.Uint16(data[10:])
			got = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("nbd: export %q: %w", name, err)
	}
	if !got {
		return fmt.Errorf("%w: export %q: no size", ErrProtocol, name)
	}
	return nil
}

// Close says goodbye and closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead == nil {
		c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		c.send(cmdDisc, 0, 0, 0, nil)
		c.dead = ErrClosed
	}
	return c.conn.Close()
}

func (c *Client) send(cmd, flags uint16, off uint64, length uint32, data []byte) (uint64, error) {
	c.seq++
	b := make([]byte, 28, 28+len(data))
	binary.BigEndian.PutUint32(b, requestMagic)
	binary.BigEndian.PutUint16(b[4:], flags)
	binary.BigEndian.PutUint16(b[6:], cmd)
	binary.BigEndian.PutUint64(b[8:], c.seq)
	binary.BigEndian.PutUint64(b[16:], off)
	binary.BigEndian.PutUint32(b[24:], length)
	b = append(b, data...)
	_, err := c.conn.Write(b)
	return c.seq, err
}

// request runs one command: it sends it, then hands every reply chunk
// to onChunk until the final one. Errors of the transport kill the
// connection; a server error (*Error) does not.
func (c *Client) request(ctx context.Context, name string, cmd, flags uint16, off uint64, length uint32, data []byte,
	onChunk func(typ uint16, payload []byte) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead != nil {
		return c.dead
	}
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetDeadline(dl)
	} else {
		c.conn.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	err := c.exchange(name, cmd, flags, off, length, data, onChunk)
	var se *Error
	if err != nil && !errors.As(err, &se) {
		if ctx.Err() != nil {
			err = fmt.Errorf("nbd: %s: %w", name, ctx.Err())
		}
		c.dead = fmt.Errorf("%w after: %v", ErrClosed, err)
		c.conn.Close()
	}
	return err
}

func (c *Client) exchange(name string, cmd, flags uint16, off uint64, length uint32, data []byte,
	onChunk func(typ uint16, payload []byte) error) error {
	handle, err := c.send(cmd, flags, off, length, data)
	if err != nil {
		return fmt.Errorf("nbd: %s: %w", name, err)
	}
	var replyErr error
	for {
		var magic uint32
		if err := binary.Read(c.r, binary.BigEndian, &magic); err != nil {
			return fmt.Errorf("nbd: %s reply: %w", name, err)
		}
		switch magic {
		case simpleMagic:
			var sr struct {
				Errno  uint32
				Handle uint64
			}
			if err := binary.Read(c.r, binary.BigEndian, &sr); err != nil {
				return fmt.Errorf("nbd: %s reply: %w", name, err)
			}
			if sr.Handle != handle {
				return fmt.Errorf("%w: %s: reply to another request", ErrProtocol, name)
			}
			if sr.Errno != 0 {
				return &Error{Command: name, Errno: sr.Errno}
			}
			if cmd == cmdRead { // a simple reply to a read carries the data
				buf := make([]byte, length)
				if _, err := io.ReadFull(c.r, buf); err != nil {
					return fmt.Errorf("nbd: %s data: %w", name, err)
				}
				b := binary.BigEndian.AppendUint64(nil, off)
				return onChunk(replyOffsetData, append(b, buf...))
			}
			return nil
		case structuredMagic:
			var h struct {
				Flags, Typ uint16
				Handle     uint64
				Len        uint32
			}
			if err := binary.Read(c.r, binary.BigEndian, &h); err != nil {
				return fmt.Errorf("nbd: %s reply: %w", name, err)
			}
			if h.Handle != handle || h.Len > maxStructuredChunk {
				return fmt.Errorf("%w: %s: bad structured reply", ErrProtocol, name)
			}
			payload := make([]byte, h.Len)
			if _, err := io.ReadFull(c.r, payload); err != nil {
				return fmt.Errorf("nbd: %s reply: %w", name, err)
			}
			switch {
			case h.Typ&replyErrorBit != 0:
				replyErr = parseError(name, h.Typ, payload)
			case h.Typ != replyNone && onChunk != nil && replyErr == nil:
				if err := onChunk(h.Typ, payload); err != nil {
					return err
				}
			}
			if h.Flags&replyFlagDone != 0 {
				return replyErr
			}
		default:
			return fmt.Errorf("%w: %s: bad reply magic %#x", ErrProtocol, name, magic)
		}
	}
}

func parseError(name string, typ uint16, p []byte) error {
	e := &Error{Command: name}
	if len(p) >= 6 {
		e.Errno = binary.BigEndian.Uint32(p)
		n := int(binary.BigEndian.Uint16(p[4:]))
		if 6+n <= len(p) {
			e.Msg = string(p[6 : 6+n])
		}
	}
	_ = typ
	return e
}

func (c *Client) check(off int64, n int) error {
	if off < 0 || n < 0 || off+int64(n) > c.size {
		return fmt.Errorf("nbd: range %d+%d is outside the export (%d bytes)", off, n, c.size)
	}
	if n > MaxRequest {
		return fmt.Errorf("nbd: request of %d bytes is over %d", n, MaxRequest)
	}
	return nil
}

// ReadAt fills p from offset off (at most MaxRequest bytes); holes read
// as zeroes.
func (c *Client) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := c.check(off, len(p)); err != nil {
		return err
	}
	filled := 0
	err := c.request(ctx, "read", cmdRead, 0, uint64(off), uint32(len(p)), nil, func(typ uint16, pl []byte) error {
		switch typ {
		case replyOffsetData:
			if len(pl) < 8 {
				return fmt.Errorf("%w: short data chunk", ErrProtocol)
			}
			at := int64(binary.BigEndian.Uint64(pl)) - off
			data := pl[8:]
			if at < 0 || at+int64(len(data)) > int64(len(p)) {
				return fmt.Errorf("%w: data chunk outside the read", ErrProtocol)
			}
			filled += copy(p[at:], data)
		case replyOffsetHole:
			if len(pl) < 12 {
				return fmt.Errorf("%w: short hole chunk", ErrProtocol)
			}
			at := int64(binary.BigEndian.Uint64(pl)) - off
			n := int64(binary.BigEndian.Uint32(pl[8:]))
			if at < 0 || at+n > int64(len(p)) {
				return fmt.Errorf("%w: hole chunk outside the read", ErrProtocol)
			}
			clear(p[at : at+n])
			filled += int(n)
		}
		return nil
	})
	if err == nil && filled != len(p) {
		return fmt.Errorf("%w: read of %d bytes answered %d", ErrProtocol, len(p), filled)
	}
	return err
}

// WriteAt writes p at offset off (at most MaxRequest bytes).
func (c *Client) WriteAt(ctx context.Context, p []byte, off int64) error {
	if c.ReadOnly() {
		return fmt.Errorf("%w: the export is read-only", ErrUnsupported)
	}
	if err := c.check(off, len(p)); err != nil {
		return err
	}
	return c.request(ctx, "write", cmdWrite, 0, uint64(off), uint32(len(p)), p, nil)
}

// WriteZeroes makes length bytes at off read as zeroes (the server may
// punch a hole). length may exceed MaxRequest.
func (c *Client) WriteZeroes(ctx context.Context, off, length int64) error {
	if c.ReadOnly() {
		return fmt.Errorf("%w: the export is read-only", ErrUnsupported)
	}
	if off < 0 || length < 0 || off+length > c.size {
		return fmt.Errorf("nbd: range %d+%d is outside the export (%d bytes)", off, length, c.size)
	}
	for length > 0 {
		n := min(length, 1<<30)
		var err error
		if c.flags&transFlagWriteZeros != 0 {
			err = c.request(ctx, "write-zeroes", cmdWriteZeroes, 0, uint64(off), uint32(n), nil, nil)
		} else {
			err = c.writeZeroBuf(ctx, off, n)
		}
		if err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

func (c *Client) writeZeroBuf(ctx context.Context, off, n int64) error {
	buf := make([]byte, min(n, 4<<20))
	for n > 0 {
		k := min(n, int64(len(buf)))
		if err := c.WriteAt(ctx, buf[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// Flush asks the server to make every write durable.
func (c *Client) Flush(ctx context.Context) error {
	if c.flags&transFlagSendFlush == 0 {
		return nil
	}
	return c.request(ctx, "flush", cmdFlush, 0, 0, 0, nil, nil)
}

// BlockStatus describes [off, off+length) in the metadata context meta
// (negotiated at Dial). The server may describe less than asked (at
// least one extent); the extents start at off.
func (c *Client) BlockStatus(ctx context.Context, meta string, off, length int64) ([]Extent, error) {
	id, ok := c.ctxID[meta]
	if !ok {
		return nil, fmt.Errorf("%w: metadata context %q was not negotiated", ErrUnsupported, meta)
	}
	if off < 0 || length <= 0 || off+length > c.size {
		return nil, fmt.Errorf("nbd: range %d+%d is outside the export (%d bytes)", off, length, c.size)
	}
	length = min(length, 1<<31)
	var out []Extent
	err := c.request(ctx, "block-status", cmdBlockStatus, 0, uint64(off), uint32(length), nil, func(typ uint16, pl []byte) error {
		if typ != replyBlockStatus || len(pl) < 4 || binary.BigEndian.Uint32(pl) != id {
			return nil
		}
		for p := pl[4:]; len(p) >= 8; p = p[8:] {
			out = append(out, Extent{Length: binary.BigEndian.Uint32(p), Flags: binary.BigEndian.Uint32(p[4:])})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: block status answered no extent", ErrProtocol)
	}
	return out, nil
}

// Walk calls fn for every extent of meta over the whole export, in order,
// with its absolute offset.
func (c *Client) Walk(ctx context.Context, meta string, fn func(off int64, e Extent) error) error {
	for off := int64(0); off < c.size; {
		exts, err := c.BlockStatus(ctx, meta, off, c.size-off)
		if err != nil {
			return err
		}
		for _, e := range exts {
			n := min(int64(e.Length), c.size-off)
			if n <= 0 {
				return fmt.Errorf("%w: empty extent", ErrProtocol)
			}
			if err := fn(off, Extent{Length: uint32(n), Flags: e.Flags}); err != nil {
				return err
			}
			off += n
			if off >= c.size {
				break
			}
		}
	}
	return nil
}

package qemu

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// The control connection between the two drivers of a migration: one TCP
// connection (mutual TLS when the hosts have migration TLS material) from
// the source to the target, JSON lines, one request and one reply at a
// time. It lives for the whole migration, so the target notices a dead
// source (EOF, or silence past controlIdle) and drops its copy.
//
//	prepare {key, postcopy, cold,   target: capabilities (multifd with
//	        multifd, disks}          the channels asked for), TLS, start
//	        → {disks, port,          listening (not when cold) on a port
//	        multifd}                 QEMU chose and names in port; replies
//	                                 the disks it found on shared storage
//	                                 (not to mirror) and the channels set
//	ping                            keep-alive during a long transfer
//	time    → {now}                 the target's clock (tick gap offset)
//	done    → ok                    the source is paused and the disks in
//	                                 sync: the target resumes the guest
//	                                 (cold: quits its QEMU, VM stopped)
//	recover → {port}                post-copy broke: the target listens
//	                                 again (migrate-recover) on port
//	ticks {want} → {ticks}          the ticks the target saw after resume
//	abort   → ok                    the target deletes its copy
//
// Anything but "done" ending the connection (EOF, an error, QEMU exiting
// on the target) makes the target delete its copy.

const (
	incomingAccept = 10 * time.Minute // the source must connect within this
	controlIdle    = 2 * time.Minute  // the target gives up on a silent source
	controlPing    = 20 * time.Second // the source's keep-alive period
)

// ctlMsg is a control request or reply.
type ctlMsg struct {
	Op       string `json:"op,omitempty"`
	Key      string `json:"key,omitempty"`
	PostCopy bool   `json:"postcopy,omitempty"`
	Cold     bool   `json:"cold,omitempty"` // a stopped VM: disks only, no memory stream
	// Multifd is prepare's multifd channels (0, 1: a single stream); the
	// answer repeats them once the target has set them.
	Multifd int               `json:"multifd,omitempty"`
	Disks   map[string]string `json:"disks,omitempty"` // disk name → active layer file
	Want    int               `json:"want,omitempty"`
	Port    int               `json:"port,omitempty"` // prepare's answer: the memory stream's port
	Now     int64             `json:"now,omitempty"`  // unix ns
	Ticks   []Tick            `json:"ticks,omitempty"`
	OK      bool              `json:"ok,omitempty"`
	Error   string            `json:"error,omitempty"`
}

// migAddr is MigrateIn's answer:
// qemu://host?nbd=P&ctl=P&key=K[&tls=NAME][&machine=TYPE]. The memory
// stream's port (mig) comes in the answer to "prepare", once QEMU has
// bound it; addresses of older targets carry it as mig=P.
type migAddr struct {
	host           string
	mig, nbd, ctrl int
	key            string
	tlsName        string // the name the target's certificate carries; empty: no TLS
	machine        string // the target's versioned machine type; empty: not said
}

func (a migAddr) String() string {
	q := url.Values{}
	if a.mig > 0 {
		q.Set("mig", strconv.Itoa(a.mig))
	}
	q.Set("nbd", strconv.Itoa(a.nbd))
	q.Set("ctl", strconv.Itoa(a.ctrl))
	q.Set("key", a.key)
	if a.tlsName != "" {
		q.Set("tls", a.tlsName)
	}
	if a.machine != "" {
		q.Set("machine", a.machine)
	}
	return (&url.URL{Scheme: "qemu", Host: a.host, RawQuery: q.Encode()}).String()
}

func parseMigAddr(s string) (migAddr, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "qemu" || u.Hostname() == "" {
		return migAddr{}, fmt.Errorf("qemu: bad migration address %q (want qemu://host?nbd=&ctl=&key=)", s)
	}
	q := u.Query()
	a := migAddr{host: u.Hostname(), key: q.Get("key"), tlsName: q.Get("tls"), machine: q.Get("machine")}
	for k, p := range map[string]*int{"mig": &a.mig, "nbd": &a.nbd, "ctl": &a.ctrl} {
		if k == "mig" && !q.Has(k) {
			continue // told in the answer to "prepare"
		}
		if *p, err = strconv.Atoi(q.Get(k)); err != nil || *p <= 0 || *p > 65535 {
			return migAddr{}, fmt.Errorf("qemu: bad migration address %q: %s", s, k)
		}
	}
	if a.key == "" {
		return migAddr{}, fmt.Errorf("qemu: bad migration address %q: key", s)
	}
	return a, nil
}

func newKey() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ctlConn is the source's end of the control connection.
type ctlConn struct {
	c  net.Conn
	r  *bufio.Reader
	at time.Time // last request
}

func dialControl(ctx context.Context, a migAddr, tlsDir string) (*ctlConn, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", net.JoinHostPort(a.host, strconv.Itoa(a.ctrl)))
	if err != nil {
		return nil, fmt.Errorf("qemu: migration control: %w", err)
	}
	if a.tlsName != "" {
		cfg, err := controlClientTLS(tlsDir, a.tlsName)
		if err != nil {
			c.Close()
			return nil, err
		}
		tc := tls.Client(c, cfg)
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("qemu: migration control: TLS: %w", err)
		}
		c = tc
	}
	return &ctlConn{c: c, r: bufio.NewReader(c)}, nil
}

// call sends one request and reads its reply; limit bounds the exchange.
func (cc *ctlConn) call(req ctlMsg, limit time.Duration) (ctlMsg, error) {
	cc.at = time.Now()
	cc.c.SetDeadline(time.Now().Add(limit))
	b, _ := json.Marshal(req)
	if _, err := cc.c.Write(append(b, '\n')); err != nil {
		return ctlMsg{}, fmt.Errorf("qemu: migration control %s: %w", req.Op, err)
	}
	line, err := cc.r.ReadBytes('\n')
	if err != nil {
		return ctlMsg{}, fmt.Errorf("qemu: migration control %s: %w", req.Op, err)
	}
	var rep ctlMsg
	if err := json.Unmarshal(line, &rep); err != nil {
		return ctlMsg{}, fmt.Errorf("qemu: migration control %s: %w", req.Op, err)
	}
	if !rep.OK {
		return rep, fmt.Errorf("qemu: migration target: %s", rep.Error)
	}
	return rep, nil
}

func (cc *ctlConn) close() {
	if cc != nil {
		cc.c.Close()
	}
}

// ctlServer is the target's end: it accepts one authenticated source.
type ctlServer struct {
	ln     *net.TCPListener
	tlsCfg *tls.Config // nil: plain
}

// accept waits for the source, giving up when quit closes.
func (s *ctlServer) accept(quit <-chan struct{}) (net.Conn, error) {
	s.ln.SetDeadline(time.Now().Add(incomingAccept))
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := s.ln.Accept()
		ch <- res{c, err}
	}()
	var r res
	select {
	case r = <-ch:
	case <-quit:
		s.ln.Close()
		if r := <-ch; r.c != nil {
			r.c.Close()
		}
		return nil, errors.New("QEMU ended before the source connected")
	}
	if r.err != nil {
		return nil, r.err
	}
	if s.tlsCfg == nil {
		return r.c, nil
	}
	tc := tls.Server(r.c, s.tlsCfg)
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tc.Handshake(); err != nil {
		tc.Close()
		return nil, fmt.Errorf("control TLS: %w", err)
	}
	return tc, nil
}

// readMsg reads one request within controlIdle.
func readMsg(c net.Conn, r *bufio.Reader) (ctlMsg, error) {
	c.SetDeadline(time.Now().Add(controlIdle))
	line, err := r.ReadBytes('\n')
	if err != nil {
		return ctlMsg{}, err
	}
	var m ctlMsg
	if err := json.Unmarshal(line, &m); err != nil {
		return ctlMsg{}, fmt.Errorf("bad control message: %w", err)
	}
	return m, nil
}

func writeMsg(c net.Conn, m ctlMsg) error {
	c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	b, _ := json.Marshal(m)
	_, err := c.Write(append(b, '\n'))
	return err
}

func errReply(err error) ctlMsg {
	return ctlMsg{Error: strings.TrimPrefix(err.Error(), "qemu: ")}
}

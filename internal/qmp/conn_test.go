package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2"}, "capabilities": ["oob"]}}`

// fakeReq is a command as the fake monitor received it.
type fakeReq struct {
	Execute   string          `json:"execute"`
	ExecOOB   string          `json:"exec-oob"`
	Arguments json.RawMessage `json:"arguments"`
	ID        json.RawMessage `json:"id"`
	fds       []int
}

// fakeMonitor is a scripted QMP peer on a unix socket in a temp dir.
// handle answers each command after qmp_capabilities: it returns the
// lines to send back (replies and events), in order.
type fakeMonitor struct {
	t      *testing.T
	path   string
	ln     *net.UnixListener
	handle func(r fakeReq) []string

	mu    sync.Mutex
	conns []*net.UnixConn
}

func newFakeMonitor(t *testing.T, greet string, handle func(r fakeReq) []string) *fakeMonitor {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	m := &fakeMonitor{t: t, path: path, ln: ln, handle: handle}
	t.Cleanup(func() { ln.Close(); m.closeConns() })
	go m.serve(greet)
	return m
}

func (m *fakeMonitor) closeConns() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		c.Close()
	}
}

func (m *fakeMonitor) serve(greet string) {
	for {
		c, err := m.ln.AcceptUnix()
		if err != nil {
			return
		}
		m.mu.Lock()
		m.conns = append(m.conns, c)
		m.mu.Unlock()
		go m.session(c, greet)
	}
}

func (m *fakeMonitor) session(c *net.UnixConn, greet string) {
	var wmu sync.Mutex
	send := func(line string) {
		wmu.Lock()
		defer wmu.Unlock()
		c.Write([]byte(line + "\r\n"))
	}
	send(greet)
	fr := &fdReader{c: c}
	sc := bufio.NewScanner(fr)
	for sc.Scan() {
		var r fakeReq
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		r.fds, fr.fds = fr.fds, nil
		if r.Execute == "qmp_capabilities" {
			send(`{"return": {}, "id": ` + string(r.ID) + `}`)
			continue
		}
		go func() { // concurrent handling lets replies overtake each other
			for _, out := range m.handle(r) {
				if out == "CLOSE" {
					c.Close()
					return
				}
				send(out)
			}
		}()
	}
}

// fdReader reads a unix connection, collecting passed descriptors.
type fdReader struct {
	c   *net.UnixConn
	fds []int
}

func (r *fdReader) Read(p []byte) (int, error) {
	oob := make([]byte, 256)
	n, oobn, _, _, err := r.c.ReadMsgUnix(p, oob)
	if oobn > 0 {
		msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
		for _, msg := range msgs {
			got, _ := syscall.ParseUnixRights(&msg)
			r.fds = append(r.fds, got...)
		}
	}
	return n, err
}

func ret(r fakeReq, v string) string { return `{"return": ` + v + `, "id": ` + string(r.ID) + `}` }

func dial(t *testing.T, m *fakeMonitor) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, m.path, Options{})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestHandshakeAndVersion(t *testing.T) {
	m := newFakeMonitor(t, greeting, func(r fakeReq) []string { return []string{ret(r, "{}")} })
	c := dial(t, m)
	if got := c.Version().String(); got != "7.2.22" {
		t.Fatalf("version %q, want 7.2.22", got)
	}
}

func TestBadGreeting(t *testing.T) {
	tests := []struct{ name, greet string }{
		{"not json", `hello`},
		{"a reply", `{"return": {}}`},
		{"ambiguous", `{"QMP": {}, "return": {}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newFakeMonitor(t, tt.greet, func(r fakeReq) []string { return nil })
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if _, err := Dial(ctx, m.path, Options{}); err == nil {
				t.Fatal("Dial accepted a bad greeting")
			}
		})
	}
}

func TestCommands(t *testing.T) {
	m := newFakeMonitor(t, greeting, func(r fakeReq) []string {
		switch r.Execute {
		case "query-status":
			return []string{ret(r, `{"running": true, "singlestep": false, "status": "running"}`)}
		case "balloon":
			return []string{ret(r, string(r.Arguments))} // echo the arguments
		case "device_del":
			return []string{`{"error": {"class": "DeviceNotFound", "desc": "Device 'x' not found"}, "id": ` + string(r.ID) + `}`}
		default:
			return []string{`{"error": {"class": "CommandNotFound", "desc": "The command ` + r.Execute + ` has not been found"}, "id": ` + string(r.ID) + `}`}
		}
	})
	c := dial(t, m)
	ctx := context.Background()

	st, err := c.QueryStatus(ctx)
	if err != nil || !st.Running || st.Status != "running" {
		t.Fatalf("QueryStatus = %+v, %v", st, err)
	}
	var echo map[string]int64
	if err := c.Execute(ctx, "balloon", Args{"value": 1 << 30}, &echo); err != nil || echo["value"] != 1<<30 {
		t.Fatalf("balloon echo = %v, %v", echo, err)
	}
	err = c.DeviceDel(ctx, "x")
	var qe *Error
	if !errors.As(err, &qe) || qe.Class != "DeviceNotFound" || qe.Command != "device_del" {
		t.Fatalf("DeviceDel error = %#v", err)
	}
	if !IsClass(err, "DeviceNotFound") || IsClass(err, "GenericError") {
		t.Fatal("IsClass misjudged the class")
	}
	if got := err.Error(); got != "qmp: device_del: Device 'x' not found (DeviceNotFound)" {
		t.Fatalf("Error() = %q", got)
	}
	if err := c.Execute(ctx, "nope", nil, nil); !IsClass(err, "CommandNotFound") {
		t.Fatalf("unknown command: %v", err)
	}
}

func TestConcurrentCommandsMatchedByID(t *testing.T) {
	m := newFakeMonitor(t, greeting, func(r fakeReq) []string {
		var a struct{ N int }
		json.Unmarshal(r.Arguments, &a)
		if a.N%2 == 0 { // delay every other reply so replies arrive out of order
			time.Sleep(20 * time.Millisecond)
		}
		return []string{ret(r, `{"n": `+string(mustJSON(a.N))+`}`)}
	})
	c := dial(t, m)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out struct{ N int }
			if err := c.Execute(context.Background(), "echo", Args{"N": i}, &out); err != nil || out.N != i {
				t.Errorf("echo %d = %d, %v", i, out.N, err)
			}
		}()
	}
	wg.Wait()
}

func mustJSON(v any) []byte { b, _ := json.Marshal(v); return b }

func TestTimeoutAbandonsOnlyThatCommand(t *testing.T) {
	release := make(chan struct{})
	m := newFakeMonitor(t, greeting, func(r fakeReq) []string {
		if r.Execute == "slow" {
			<-release
			return []string{ret(r, `{"late": true}`)}
		}
		return []string{ret(r, `{}`)}
	})
	c := dial(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.Execute(ctx, "slow", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow command: %v, want DeadlineExceeded", err)
	}
	close(release)
	// The late reply is discarded; the connection keeps working.
	if err := c.Execute(context.Background(), "fast", nil, nil); err != nil {
		t.Fatalf("after timeout: %v", err)
	}
}

// TestCommandWithoutDeadlineIsBounded: a context without a deadline does
// not let a command wait forever on a monitor that never answers.
func TestCommandWithoutDeadlineIsBounded(t *testing.T) {
	m := newFakeMonitor(t, greeting, func(r fakeReq) []string {
		if r.Execute == "never" {
			return nil
		}
		return []string{ret(r, `{}`)}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, m.path, Options{CommandTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- c.Execute(context.Background(), "never", nil, nil) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("never: %v, want DeadlineExceeded", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a command without a deadline still waits")
	}
	if err := c.Execute(context.Background(), "fast", nil, nil); err != nil {
		t.Fatalf("after the bound: %v", err)
	}
}

func TestEvents(t *testing.T) {
	m := newFakeMonitor(t, greeting, func(r fakeReq) []string {
		if r.Execute == "system_powerdown" {
			return []string{
				ret(r, `{}`),
				`{"event": "POWERDOWN", "timestamp": {"seconds": 1700000000, "microseconds": 250000}}`,
			}
		}
		if r.Execute == "trigger" {
			return []string{`{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": 1700000001, "microseconds": 0}}`, ret(r, `{}`)}
		}
		return []string{ret(r, `{}`)}
	})
	c := dial(t, m)
	all := c.Subscribe()
	defer all.Close()
	shut := c.Subscribe("SHUTDOWN")
	defer shut.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	if err := c.SystemPowerdown(ctx); err != nil {
		t.Fatal(err)
	}
	ev, err := all.Wait(ctx, func(e Event) bool { return e.Name == "POWERDOWN" })
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Unix(1700000000, 250000000).UTC(); !ev.Timestamp.Equal(want) {
		t.Fatalf("timestamp %v, want %v", ev.Timestamp, want)
	}
	if err := c.Execute(ctx, "trigger", nil, nil); err != nil {
		t.Fatal(err)
	}
	ev, err = shut.Wait(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var data struct {
		Guest  bool   `json:"guest"`
		Reason string `json:"reason"`
	}
	if err := ev.DecodeData(&data); err != nil || !data.Guest || data.Reason != "guest-shutdown" {
		t.Fatalf("SHUTDOWN data %+v, %v", data, err)
	}
	select {
	case e := <-shut.C:
		t.Fatalf("filtered subscription got %s", e.Name)
	default:
	}
}

func TestSlowSubscriberDropsInsteadOfBlocking(t *testing.T) {
	m := newFakeMonitor(t, greeting, func(r fakeReq) []string {
		out := []string{}
		for range 10 {
			out = append(out, `{"event": "TICK"}`)
		}
		return append(out, ret(r, `{}`))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, m.path, Options{EventBuffer: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := c.Subscribe("TICK")
	if err := c.Execute(ctx, "go", nil, nil); err != nil {
		t.Fatal(err)
	}
	// Give the reader time to see all events (they may trail the reply).
	deadline := time.Now().Add(2 * time.Second)
	for s.Dropped() < 8 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := s.Dropped(); got != 8 {
		t.Fatalf("dropped %d events, want 8", got)
	}
}

func TestPeerCloseFailsPendingAndLater(t *testing.T) {
	m := newFakeMonitor(t, greeting, func(r fakeReq) []string {
		if r.Execute == "quit" {
			return []string{"CLOSE"}
		}
		return []string{ret(r, `{}`)}
	})
	c := dial(t, m)
	sub := c.Subscribe()
	err := c.Quit(context.Background())
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("quit: %v, want ErrClosed", err)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed")
	}
	if _, ok := <-sub.C; ok {
		t.Fatal("subscription channel still open")
	}
	if err := c.Stop(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v, want ErrClosed", err)
	}
	if !errors.Is(c.Err(), ErrClosed) {
		t.Fatalf("Err() = %v", c.Err())
	}
	sub.Close() // idempotent after the connection closed
}

func TestGetfdPassesDescriptor(t *testing.T) {
	got := make(chan int, 1)
	m := newFakeMonitor(t, greeting, func(r fakeReq) []string {
		if r.Execute == "getfd" {
			got <- len(r.fds)
			for _, fd := range r.fds {
				syscall.Close(fd)
			}
		}
		return []string{ret(r, `{}`)}
	})
	c := dial(t, m)
	f, err := os.CreateTemp(t.TempDir(), "fd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := c.Getfd(context.Background(), "mig", f); err != nil {
		t.Fatal(err)
	}
	if n := <-got; n != 1 {
		t.Fatalf("peer received %d descriptors, want 1", n)
	}
}

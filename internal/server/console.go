package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/vpool/vpool/internal/api"
)

// Serial consoles. Agents do not listen, so a console is joined from the
// agent's side: a user opens GET /api/v1/vms/{name}/console (a websocket)
// on a server; the server queues a ConsoleRequest for the VM's host, which
// the agent long-polls (GET /agent/v1/consoles); the agent dials back
// GET /agent/v1/consoles/{id} (a websocket over its mutual-TLS channel)
// and the server relays messages both ways until either side goes.
// Sessions live in the memory of the server the user reached, so the
// host's agent must poll that server (true with one server; with several,
// see docs/qemu.md).

const (
	// consoleJoinTimeout is how long a user waits for the agent to dial back.
	consoleJoinTimeout = 20 * time.Second
	// maxConsoleLog bounds the log tail a user may ask for.
	maxConsoleLog     = 1 << 20
	defaultConsoleLog = 64 << 10
)

// consoleBroker pairs user sessions with the agents that serve them. Its
// zero value is ready to use.
type consoleBroker struct {
	mu       sync.Mutex
	queued   map[string][]api.ConsoleRequest // per host, not yet fetched
	wake     map[string]chan struct{}        // per host, closed on a new request
	sessions map[string]*consoleSession
}

type consoleSession struct {
	req   api.ConsoleRequest
	host  string
	agent chan *websocket.Conn // the agent's side, once it dialled
	done  chan struct{}        // closed when the user's side ends
}

func (b *consoleBroker) open(host string, req api.ConsoleRequest) *consoleSession {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sessions == nil {
		b.queued, b.wake, b.sessions = map[string][]api.ConsoleRequest{}, map[string]chan struct{}{}, map[string]*consoleSession{}
	}
	sess := &consoleSession{req: req, host: host, agent: make(chan *websocket.Conn, 1), done: make(chan struct{})}
	b.sessions[req.ID] = sess
	b.queued[host] = append(b.queued[host], req)
	if ch := b.wake[host]; ch != nil {
		close(ch)
		delete(b.wake, host)
	}
	return sess
}

func (b *consoleBroker) close(sess *consoleSession) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.sessions, sess.req.ID)
	q := b.queued[sess.host]
	for i, r := range q {
		if r.ID == sess.req.ID {
			b.queued[sess.host] = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	close(sess.done)
}

// take returns the host's queued requests, or a channel closed when one
// arrives.
func (b *consoleBroker) take(host string) ([]api.ConsoleRequest, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if q := b.queued[host]; len(q) > 0 {
		delete(b.queued, host)
		return q, nil
	}
	if b.wake == nil {
		b.queued, b.wake, b.sessions = map[string][]api.ConsoleRequest{}, map[string]chan struct{}{}, map[string]*consoleSession{}
	}
	ch := b.wake[host]
	if ch == nil {
		ch = make(chan struct{})
		b.wake[host] = ch
	}
	return nil, ch
}

func (b *consoleBroker) session(id string) *consoleSession {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sessions[id]
}

func newSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// joinConsole queues a request for the VM's host and waits for its agent
// to dial back.
func (s *Server) joinConsole(ctx context.Context, project, name, kind string, tail int) (*consoleSession, *websocket.Conn, error) {
	vm, err := s.assignedVM(ctx, project, name, "a console")
	if err != nil {
		return nil, nil, err
	}
	sess := s.consoles.open(vm.Status.Host, api.ConsoleRequest{ID: newSessionID(), Project: project, Name: name, Kind: kind, Tail: tail})
	t := time.NewTimer(consoleJoinTimeout)
	defer t.Stop()
	select {
	case c := <-sess.agent:
		return sess, c, nil
	case <-t.C:
		err = errf(http.StatusServiceUnavailable, api.CodeUnavailable, "",
			"the agent of host %s did not connect the console within %s", vm.Status.Host, consoleJoinTimeout)
	case <-ctx.Done():
		err = ctx.Err()
	case <-s.drain:
		err = errf(http.StatusServiceUnavailable, api.CodeUnavailable, "", "the server is shutting down")
	}
	s.consoles.close(sess)
	return nil, nil, err
}

// consoleAttach upgrades to a websocket and relays the VM's serial console.
func (s *Server) consoleAttach(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, true)
	if err != nil {
		return err
	}
	ctx, cancel := s.streamContext(r)
	defer cancel()
	sess, agentConn, err := s.joinConsole(ctx, project, r.PathValue("name"), api.ConsoleAttach, 0)
	if err != nil {
		return err
	}
	defer s.consoles.close(sess)
	// a browser offers "vpool.console" beside the subprotocol that
	// carries its token (websocketBearer), and must be answered one
	user, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"vpool.console"}})
	if err != nil {
		agentConn.Close(websocket.StatusInternalError, "user went away")
		return nil // Accept answered the request
	}
	user.SetReadLimit(1 << 20)
	agentConn.SetReadLimit(1 << 20)
	relay(ctx, user, agentConn)
	return nil
}

// relay copies messages both ways until one side ends, then closes both.
func relay(ctx context.Context, a, b *websocket.Conn) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	pipe := func(dst, src *websocket.Conn) {
		defer wg.Done()
		defer cancel()
		for {
			typ, data, err := src.Read(ctx)
			if err != nil {
				return
			}
			if err := dst.Write(ctx, typ, data); err != nil {
				return
			}
		}
	}
	wg.Add(2)
	go pipe(a, b)
	go pipe(b, a)
	<-ctx.Done()
	a.Close(websocket.StatusNormalClosure, "console closed")
	b.Close(websocket.StatusNormalClosure, "console closed")
	wg.Wait()
}

// consoleLog answers the tail of the VM's serial log, fetched from its agent.
func (s *Server) consoleLog(w http.ResponseWriter, r *http.Request, p *principal) error {
	project, err := s.scope(r, p, false)
	if err != nil {
		return err
	}
	tail := defaultConsoleLog
	if v := r.URL.Query().Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > maxConsoleLog {
			return fieldError("tail", "must be a byte count between 1 and %d, got %s", maxConsoleLog, quoteField(v))
		}
		tail = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), consoleJoinTimeout+10*time.Second)
	defer cancel()
	sess, c, err := s.joinConsole(ctx, project, r.PathValue("name"), api.ConsoleLogKind, tail)
	if err != nil {
		return err
	}
	defer s.consoles.close(sess)
	c.SetReadLimit(maxConsoleLog + 4096)
	_, data, err := c.Read(ctx)
	c.Close(websocket.StatusNormalClosure, "")
	if err != nil {
		return errf(http.StatusBadGateway, api.CodeUnavailable, "", "reading the log from the agent: %v", err)
	}
	out := api.ConsoleLog{Log: string(data)}
	if len(data) >= tail {
		out.Truncated = true
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// consoleRequests is the agent's long poll for console requests.
func (s *Server) consoleRequests(w http.ResponseWriter, r *http.Request, host string) error {
	wait := 30 * time.Second
	if v := r.URL.Query().Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fieldError("wait", "must be a duration like 30s, got %q", v)
		}
		wait = min(d, 60*time.Second)
	}
	ctx, cancel := s.streamContext(r)
	defer cancel()
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		items, ch := s.consoles.take(host)
		if len(items) > 0 {
			writeJSON(w, http.StatusOK, api.ConsoleRequests{Items: items})
			return nil
		}
		select {
		case <-ch:
		case <-t.C:
			writeJSON(w, http.StatusOK, api.ConsoleRequests{Items: []api.ConsoleRequest{}})
			return nil
		case <-ctx.Done():
			writeJSON(w, http.StatusOK, api.ConsoleRequests{Items: []api.ConsoleRequest{}})
			return nil
		}
	}
}

var errNoSession = errors.New("server: no such console session")

// consoleAgent is where an agent dials back for a console session.
func (s *Server) consoleAgent(w http.ResponseWriter, r *http.Request, host string) error {
	sess := s.consoles.session(r.PathValue("id"))
	if sess == nil || sess.host != host {
		return notFound("%v %q for host %s", errNoSession, r.PathValue("id"), host)
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return nil
	}
	select {
	case sess.agent <- c:
	default:
		c.Close(websocket.StatusPolicyViolation, "session already joined")
		return nil
	}
	// The relay owns c now; keep the handler until the session ends.
	select {
	case <-sess.done:
	case <-s.drain:
	}
	return nil
}

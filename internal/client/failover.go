package client

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
)

// A client of several servers (docs/ha.md): every server of a control
// plane answers the whole API, so the client talks to one, and when it
// cannot be reached (or answers that it cannot serve now), to the next.
// The transport below does it for every request of the client — JSON
// calls, event streams, uploads and consoles alike — and stays with the
// server that answered.
//
// A request is sent again to another server only when that cannot apply
// it twice: when the connection failed before the request left (a dial
// error), or when the method is idempotent (GET, HEAD, PUT, DELETE). A
// POST cut off after it was sent is reported to the caller, who cannot
// know whether it took effect: it may check (a create by name answers
// 409 when it did).

// parseServers splits addr (one address, or several separated by commas)
// into base URLs with one scheme and path; a bare host:port means http.
func parseServers(addr string) ([]*url.URL, error) {
	var out []*url.URL
	for _, a := range strings.Split(addr, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		u, err := url.Parse(a)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %v", ErrBadAddr, a, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("%w %q: want http://host:port or https://host:port", ErrBadAddr, a)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("%w %q: no query or fragment allowed", ErrBadAddr, a)
		}
		u.Path = strings.TrimRight(u.Path, "/")
		if len(out) > 0 && (u.Scheme != out[0].Scheme || u.Path != out[0].Path) {
			return nil, fmt.Errorf("%w %q: every server of a list needs the scheme and path of the first (%s)", ErrBadAddr, a, out[0])
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no address", ErrBadAddr)
	}
	return out, nil
}

// failover is an http.RoundTripper over a list of servers.
type failover struct {
	next    http.RoundTripper
	servers []*url.URL
	cur     atomic.Int64 // index of the server in use
}

func (f *failover) current() *url.URL { return f.servers[f.cur.Load()] }

// RoundTrip sends req to the server in use, then to the others in turn
// while the failure allows it (see above).
func (f *failover) RoundTrip(req *http.Request) (*http.Response, error) {
	start := int(f.cur.Load())
	n := len(f.servers)
	var lastErr error
	for i := 0; i < n; i++ {
		idx := (start + i) % n
		r, err := f.retarget(req, idx, i > 0)
		if err != nil {
			return nil, err
		}
		resp, err := f.next.RoundTrip(r)
		last := i == n-1
		switch {
		case err == nil && (last || !unavailable(resp.StatusCode) || !replayable(req) || !idempotent(req.Method)):
			f.cur.Store(int64(idx))
			return resp, nil
		case err == nil:
			// This server cannot serve now (its store lost its quorum,
			// or it is shutting down): try the next.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			lastErr = fmt.Errorf("%s answered %d", f.servers[idx].Host, resp.StatusCode)
			continue
		}
		lastErr = err
		if last || req.Context().Err() != nil || !replayable(req) || !(dialFailed(err) || idempotent(req.Method)) {
			return nil, err
		}
	}
	return nil, lastErr
}

// retarget points req at server idx; a retry gets a fresh body.
func (f *failover) retarget(req *http.Request, idx int, retry bool) (*http.Request, error) {
	s := f.servers[idx]
	if !retry && req.URL.Host == s.Host && req.URL.Scheme == s.Scheme {
		return req, nil
	}
	r := req.Clone(req.Context())
	r.URL.Scheme, r.URL.Host, r.Host = s.Scheme, s.Host, ""
	if retry && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return nil, fmt.Errorf("client: resend to %s: %w", s.Host, err)
		}
		r.Body = body
	}
	return r, nil
}

// replayable: the request has no body, or one it can make again.
func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
		return true
	}
	return false
}

func unavailable(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}

// dialFailed says whether err happened before the request left: the
// connection could not be made.
func dialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

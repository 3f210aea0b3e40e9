package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/api"
)

// StatusError is a non-2xx answer of the server.
type StatusError struct {
	Status int
	Err    api.Error
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("server said %d %s: %s", e.Status, e.Err.Code, e.Err.Error())
}

// httpStatus returns the HTTP status of err, or 0 when it is no
// StatusError (a network failure).
func httpStatus(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// rawBody is a request body sent as it is, under its Content-Type (the
// compact heartbeat, api.HeartbeatCompactType).
type rawBody struct {
	b     []byte
	ctype string
}

// transport does JSON calls against the agent listener.
type transport struct {
	base   string
	http   *http.Client
	bearer string
}

func (c *transport) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ctype := "application/json"
	switch v := in.(type) {
	case nil:
	case rawBody:
		body, ctype = bytes.NewReader(v.b), v.ctype
	default:
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Accept", "application/json")
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		se := &StatusError{Status: resp.StatusCode}
		if json.Unmarshal(b, &se.Err) != nil || se.Err.Message == "" {
			se.Err = api.Error{Code: http.StatusText(resp.StatusCode), Message: string(bytes.TrimSpace(b))}
		}
		return se
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode response: %w", err)
		}
	}
	return nil
}

// backoff is an exponential delay with jitter between failed attempts.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
	n        uint64
}

func newBackoff(min, max time.Duration) *backoff { return &backoff{min: min, max: max} }

// next returns the delay before the next attempt.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur *= 2
		if b.cur > b.max {
			b.cur = b.max
		}
	}
	b.n++
	// Deterministic jitter of up to 25% so that many agents spread out.
	j := time.Duration((b.n*2654435761)%256) * b.cur / 1024
	return b.cur - j
}

func (b *backoff) reset() { b.cur = 0 }

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// An agent knows every server of the control plane (Config.ServerURL
// lists them, comma-separated: docs/ha.md). Its calls go to one and,
// when that one cannot be reached or answers that it cannot serve now,
// to the next, which it then stays with: serverFailover does it below
// the HTTP client, so JSON calls, long polls, image downloads and console
// websockets all follow. The agent's calls are GETs and PUTs that may be
// sent twice; a POST (the join) goes to another server only when the
// connection failed before it left.

// server is one server's agent listener.
type server struct {
	base string // https://host:port
	name string // the host part, the name its certificate must carry
}

// parseServers parses a comma-separated list of https URLs.
func parseServers(list string) ([]server, error) {
	var out []server
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("%w: ServerURL %q is not an https URL of a server's agent listener", ErrConfig, raw)
		}
		out = append(out, server{base: "https://" + u.Host, name: serverName(u)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: ServerURL names no server", ErrConfig)
	}
	return out, nil
}

// serverFailover is an http.RoundTripper over the agent listeners of
// several servers.
type serverFailover struct {
	next    http.RoundTripper
	servers []server
	cur     atomic.Int64
}

// withFailover wraps rt when there is more than one server.
func withFailover(rt http.RoundTripper, servers []server) http.RoundTripper {
	if len(servers) < 2 {
		return rt
	}
	return &serverFailover{next: rt, servers: servers}
}

// attemptKey marks a request context with a deadline for each server
// tried (withAttemptTimeout).
type attemptKey struct{}

// withAttemptTimeout gives every server a request is sent to at most d to
// answer: a server that stalls (its store waits for a quorum it cannot
// reach, its process is stopped, its machine vanished without closing
// the connection) then costs d, and the request goes on to the next
// server, which becomes the current one. Only for requests that may be
// sent twice (the heartbeat: a PUT).
func withAttemptTimeout(ctx context.Context, d time.Duration) context.Context {
	return context.WithValue(ctx, attemptKey{}, d)
}

// cancelBody cancels an attempt's context once its body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

func (f *serverFailover) RoundTrip(req *http.Request) (*http.Response, error) {
	start := int(f.cur.Load())
	per, _ := req.Context().Value(attemptKey{}).(time.Duration)
	var lastErr error
	for i := range f.servers {
		idx := (start + i) % len(f.servers)
		u, _ := url.Parse(f.servers[idx].base)
		actx, cancel := req.Context(), context.CancelFunc(func() {})
		if per > 0 {
			actx, cancel = context.WithTimeout(actx, per)
		}
		r := req.Clone(actx)
		r.URL.Scheme, r.URL.Host, r.Host = u.Scheme, u.Host, ""
		if i > 0 && req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				cancel()
				return nil, lastErr
			}
			body, err := req.GetBody()
			if err != nil {
				cancel()
				return nil, err
			}
			r.Body = body
		}
		resp, err := f.next.RoundTrip(r)
		last := i == len(f.servers)-1
		if err == nil {
			if last || !unavailable(resp.StatusCode) || req.Method == http.MethodPost {
				f.cur.Store(int64(idx))
				resp.Body = cancelBody{resp.Body, cancel}
				return resp, nil
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			cancel()
			lastErr = fmt.Errorf("%s answered %d", u.Host, resp.StatusCode)
			continue
		}
		stalled := per > 0 && actx.Err() != nil && req.Context().Err() == nil
		cancel()
		lastErr = err
		if stalled { // the next request starts with the next server
			f.cur.CompareAndSwap(int64(idx), int64((idx+1)%len(f.servers)))
		}
		if last || req.Context().Err() != nil || (req.Method == http.MethodPost && !dialFailed(err)) {
			return nil, err
		}
	}
	return nil, lastErr
}

func unavailable(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}

// dialFailed: the connection could not be made, so nothing was sent.
func dialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

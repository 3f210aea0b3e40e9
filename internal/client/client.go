package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/api"
)

// DefaultAddr is where `vpool dev` and `vpool server` listen by default.
const DefaultAddr = "http://127.0.0.1:8440"

// ErrBadAddr is returned by New for an address it cannot use.
var ErrBadAddr = errors.New("client: bad address")

// ErrBadCA is returned by New when the CA certificate holds no PEM
// certificate.
var ErrBadCA = errors.New("client: bad CA certificate")

// Client talks to a vpool server, or to any of several (failing over
// between them). It is safe for concurrent use.
type Client struct {
	base      string // scheme://host[:port][/path], no trailing slash
	servers   []*url.URL
	fo        *failover // nil with one server
	token     string
	userAgent string
	http      *http.Client
	pollMin   time.Duration
	pollMax   time.Duration
}

type options struct {
	caPEM      []byte
	httpClient *http.Client
	userAgent  string
	pollMin    time.Duration
	pollMax    time.Duration
}

// Option configures a Client.
type Option func(*options)

// WithCACert trusts the PEM-encoded CA certificate(s) for https addresses
// (the cluster CA that `vpool server --tls` serves with).
func WithCACert(pem []byte) Option { return func(o *options) { o.caPEM = pem } }

// WithHTTPClient replaces the HTTP client (tests, proxies). WithCACert is
// ignored when it is given.
func WithHTTPClient(h *http.Client) Option { return func(o *options) { o.httpClient = h } }

// WithUserAgent sets the User-Agent header, e.g. "vpool-cli/1.2.3".
func WithUserAgent(ua string) Option { return func(o *options) { o.userAgent = ua } }

// WithPollInterval bounds the backoff of WaitVM: it starts at min and
// grows to max. Defaults: 200ms and 2s.
func WithPollInterval(min, max time.Duration) Option {
	return func(o *options) { o.pollMin, o.pollMax = min, max }
}

// New returns a client of the server at addr (http://host:port or
// https://host:port; a bare host:port means http). addr may list several
// servers of one control plane, separated by commas: the client then
// fails over between them on its own (failover.go). token is sent as a
// bearer token on every request; it may be empty.
func New(addr, token string, opts ...Option) (*Client, error) {
	o := options{userAgent: "vpool-client", pollMin: 200 * time.Millisecond, pollMax: 2 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if addr == "" {
		addr = DefaultAddr
	}
	servers, err := parseServers(addr)
	if err != nil {
		return nil, err
	}
	hc := o.httpClient
	if hc == nil {
		// With several servers, a dead one's address costs less time.
		dial := 10 * time.Second
		if len(servers) > 1 {
			dial = 3 * time.Second
		}
		tr := &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: dial, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			MaxIdleConnsPerHost:   8,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
		if len(o.caPEM) > 0 {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(o.caPEM) {
				return nil, ErrBadCA
			}
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		hc = &http.Client{Transport: tr}
	}
	var fo *failover
	if len(servers) > 1 {
		next := hc.Transport
		if next == nil {
			next = http.DefaultTransport
		}
		fo = &failover{next: next, servers: servers}
		wrapped := *hc
		wrapped.Transport = fo
		hc = &wrapped
	}
	if o.pollMin <= 0 {
		o.pollMin = 200 * time.Millisecond
	}
	if o.pollMax < o.pollMin {
		o.pollMax = o.pollMin
	}
	return &Client{
		base:      servers[0].Scheme + "://" + servers[0].Host + servers[0].Path,
		servers:   servers,
		fo:        fo,
		token:     token,
		userAgent: o.userAgent,
		http:      hc,
		pollMin:   o.pollMin,
		pollMax:   o.pollMax,
	}, nil
}

// Addr returns the base address of the server the client talks to now.
func (c *Client) Addr() string {
	if c.fo != nil {
		u := c.fo.current()
		return u.Scheme + "://" + u.Host + u.Path
	}
	return c.base
}

// Servers returns the base addresses of every server the client knows.
func (c *Client) Servers() []string {
	out := make([]string, len(c.servers))
	for i, u := range c.servers {
		out[i] = u.Scheme + "://" + u.Host + u.Path
	}
	return out
}

// newRequest builds a request for path (which starts with /api/v1) with
// query q and a JSON body when in is not nil.
func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, in any) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("client: encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	target := c.base + path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	req.Header.Set("User-Agent", c.userAgent)
	return req, nil
}

// do sends a request and decodes a 2xx JSON answer into out (when out is
// not nil and the body is not empty). A non-2xx answer is returned as
// *api.Error.
//
// A 429 (the caller's request rate is over the server's limit; the
// request was refused before it was acted on, so it is safe to send
// again whatever its method) is retried after the answer's Retry-After,
// up to maxRateRetries times.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	var resp *http.Response
	for try := 0; ; try++ {
		req, err := c.newRequest(ctx, method, path, q, in)
		if err != nil {
			return err
		}
		resp, err = c.http.Do(req)
		if err != nil {
			return fmt.Errorf("client: %s %s: %w", method, path, err)
		}
		wait, again := retryAfter(resp, try)
		if !again {
			break
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("client: %s %s: rate limited, and %w while waiting to retry", method, path, ctx.Err())
		case <-t.C:
		}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("client: %s %s: read body: %w", method, path, err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("client: %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// maxRateRetries is how many times a request refused for its rate (429)
// is sent again; maxRateWait bounds one wait.
const (
	maxRateRetries = 5
	maxRateWait    = 30 * time.Second
)

// retryAfter says whether resp is a 429 worth sending again after the
// wait it names (at least a second, at most maxRateWait).
func retryAfter(resp *http.Response, try int) (time.Duration, bool) {
	if resp.StatusCode != http.StatusTooManyRequests || try >= maxRateRetries {
		return 0, false
	}
	wait := time.Second
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs > 0 {
		wait = min(time.Duration(secs)*time.Second, maxRateWait)
	}
	return wait, true
}

// decodeError turns a non-2xx response into *api.Error. A body that is not
// an api.Error (a proxy's HTML page, a plain-text 404) still yields an
// *api.Error whose code follows the HTTP status.
func decodeError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e api.Error
	if err := json.Unmarshal(data, &e); err == nil && e.Message != "" {
		if e.Code == "" {
			e.Code = codeForStatus(resp.StatusCode)
		}
		return &e
	}
	msg := strings.TrimSpace(string(data))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &api.Error{Code: codeForStatus(resp.StatusCode), Message: fmt.Sprintf("server answered %d: %s", resp.StatusCode, msg)}
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return api.CodeBadRequest
	case http.StatusUnauthorized:
		return api.CodeUnauthorized
	case http.StatusForbidden:
		return api.CodeForbidden
	case http.StatusNotFound:
		return api.CodeNotFound
	case http.StatusConflict:
		return api.CodeConflict
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return api.CodeUnavailable
	case http.StatusUnprocessableEntity:
		return api.CodeInvalidField
	}
	return api.CodeInternal
}

// HasCode reports whether err is (or wraps) an *api.Error with the code.
func HasCode(err error, code string) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Code == code
}

// IsNotFound reports whether err is the server's not_found.
func IsNotFound(err error) bool { return HasCode(err, api.CodeNotFound) }

func projectQuery(project string) url.Values {
	if project == "" {
		return nil
	}
	return url.Values{"project": {project}}
}

// esc escapes one path segment.
func esc(s string) string { return url.PathEscape(s) }

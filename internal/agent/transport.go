package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
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

// transport does JSON calls against the agent listener.
type transport struct {
	base   string
	http   *http.Client
	bearer string
}

func (c *transport) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
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
		req.Header.Set("Content-Type", "application/json")
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

package imagepool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/vpool/vpool/internal/model"
)

// ErrBadURL says a source URL cannot be fetched: only http and https are.
var ErrBadURL = errors.New("imagepool: bad URL")

// CheckURL accepts an absolute http or https URL with a host.
func CheckURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%w %q: %v", ErrBadURL, s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w %q: want an http:// or https:// URL", ErrBadURL, s)
	}
	if u.User != nil {
		return fmt.Errorf("%w %q: credentials in URLs are not accepted", ErrBadURL, s)
	}
	return nil
}

// HTTPClient is the client Fetch uses by default: redirects only to http
// and https, at most 10, and a bounded wait for response headers.
func HTTPClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			ResponseHeaderTimeout: time.Minute,
			TLSHandshakeTimeout:   30 * time.Second,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("more than 10 redirects")
			}
			return CheckURL(req.URL.String())
		},
	}
}

// Fetch downloads src and stores it as Put does. hc nil uses HTTPClient.
func (p *Pool) Fetch(ctx context.Context, hc *http.Client, role, src, wantSHA string, progress Progress) (model.ImageFile, model.Bytes, error) {
	if err := CheckURL(src); err != nil {
		return model.ImageFile{}, 0, err
	}
	if role == model.ImageDisk && p.cfg.Tool == nil {
		return model.ImageFile{}, 0, ErrNoTool
	}
	if hc == nil {
		hc = HTTPClient()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
	if err != nil {
		return model.ImageFile{}, 0, fmt.Errorf("%w %q: %v", ErrBadURL, src, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return model.ImageFile{}, 0, fmt.Errorf("imagepool: download %s: %w", src, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return model.ImageFile{}, 0, fmt.Errorf("imagepool: download %s: the server answered %s", src, resp.Status)
	}
	if resp.ContentLength > int64(p.cfg.MaxSize) {
		return model.ImageFile{}, 0, fmt.Errorf("%w: %s is %s, more than the pool's limit of %s", ErrBadImage, src, model.Bytes(resp.ContentLength), p.cfg.MaxSize)
	}
	return p.Put(ctx, role, resp.Body, max(resp.ContentLength, 0), wantSHA, progress)
}

package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// ErrImage says an image cannot be had on this host: unknown, not ready,
// or its bytes did not arrive intact.
var ErrImage = errors.New("agent: image unavailable")

// imageCache keeps image files fetched from the server, by SHA-256, in
// one directory. One download per file at a time; a file appears by
// rename once its checksum matched, so a crash never leaves a bad file
// under a good name.
type imageCache struct {
	dir      string
	mu       sync.Mutex
	inflight map[string]*sync.Mutex
}

func (c *imageCache) fileLock(sum string) *sync.Mutex {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight == nil {
		c.inflight = map[string]*sync.Mutex{}
	}
	m := c.inflight[sum]
	if m == nil {
		m = &sync.Mutex{}
		c.inflight[sum] = m
	}
	return m
}

// resolveImage turns an image name into what the driver boots: through
// the configured resolver, or by fetching the image's files from the
// server into the cache.
func (a *Agent) resolveImage(ctx context.Context, name string) (*hypervisor.Image, error) {
	if a.cfg.ResolveImage != nil {
		return a.cfg.ResolveImage(name)
	}
	if a.images == nil {
		return &hypervisor.Image{Name: name}, nil
	}
	var im model.Image
	if err := a.client.do(ctx, http.MethodGet, api.AgentPrefix+"/images/"+url.PathEscape(name), nil, &im); err != nil {
		if httpStatus(err) == http.StatusNotFound {
			return nil, fmt.Errorf("%w: the server has no such image", ErrImage)
		}
		return nil, err
	}
	if im.Phase != model.ImageReady {
		return nil, fmt.Errorf("%w: it is %s", ErrImage, im.Phase)
	}
	out := &hypervisor.Image{Name: name, Cmdline: im.Cmdline}
	for _, f := range im.Files {
		path, err := a.images.fetch(ctx, a.client, name, f)
		if err != nil {
			return nil, err
		}
		switch f.Role {
		case model.ImageDisk:
			out.Disk, out.Format = path, f.Format
		case model.ImageKernel:
			out.Kernel = path
		case model.ImageInitrd:
			out.Initrd = path
		}
	}
	return out, nil
}

// fetch returns the cached path of f, downloading it first when absent.
func (c *imageCache) fetch(ctx context.Context, t *transport, image string, f model.ImageFile) (string, error) {
	if err := model.ValidSHA256("sha256", f.SHA256); err != nil {
		return "", fmt.Errorf("%w: %v", ErrImage, err)
	}
	path := filepath.Join(c.dir, f.SHA256)
	l := c.fileLock(f.SHA256)
	l.Lock()
	defer l.Unlock()
	if st, err := os.Stat(path); err == nil && st.Size() == int64(f.Size) {
		return path, nil
	}
	// Searchable by all (0711), not listable: each VM's QEMU runs as an
	// unprivileged user of its own and reads the files (0644, named by
	// their SHA-256) in place.
	if err := os.MkdirAll(c.dir, 0o711); err != nil {
		return "", fmt.Errorf("agent: image cache: %w", err)
	}
	if err := os.Chmod(c.dir, 0o711); err != nil {
		return "", fmt.Errorf("agent: image cache: %w", err)
	}
	tmp, err := os.CreateTemp(c.dir, ".part-*")
	if err != nil {
		return "", fmt.Errorf("agent: image cache: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = t.download(ctx, api.AgentPrefix+"/images/"+url.PathEscape(image)+"/files/"+f.SHA256, tmp, f)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", f.Role, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", fmt.Errorf("agent: image cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("agent: image cache: %w", err)
	}
	return path, nil
}

// download copies one image file into w, checking its size and SHA-256.
func (c *transport) download(ctx context.Context, path string, w io.Writer, f model.ImageFile) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return &StatusError{Status: resp.StatusCode, Err: api.Error{Code: http.StatusText(resp.StatusCode), Message: string(b)}}
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(resp.Body, int64(f.Size)+1))
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	if n != int64(f.Size) {
		return fmt.Errorf("%w: got %d bytes, want %d", ErrImage, n, int64(f.Size))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 {
		return fmt.Errorf("%w: the file's SHA-256 is %s, want %s", ErrImage, got, f.SHA256)
	}
	return nil
}

package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// ListImages returns every image (GET /images).
func (c *Client) ListImages(ctx context.Context) ([]model.Image, error) {
	var out api.ImageList
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/images", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// GetImage returns one image.
func (c *Client) GetImage(ctx context.Context, name string) (*model.Image, error) {
	var out model.Image
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/images/"+esc(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteImage deletes an image no VM uses.
func (c *Client) DeleteImage(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, api.Prefix+"/images/"+esc(name), nil, nil, nil)
}

// ImportImageURL asks the server to download an image (req's URLs); it
// answers at once with the image importing (WaitImage follows it).
func (c *Client) ImportImageURL(ctx context.Context, req api.ImageImportRequest) (*model.Image, error) {
	var out model.Image
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/images", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UploadFile is one local file of an image upload.
type UploadFile struct {
	Role string // disk, kernel or initrd
	Path string
}

// UploadImage streams local files to the server (a multipart POST /images)
// and returns the ready image. sent, when not nil, is called as bytes go
// out with the total sent and the total to send.
func (c *Client) UploadImage(ctx context.Context, req api.ImageImportRequest, files []UploadFile, sent func(done, total int64)) (*model.Image, error) {
	var total int64
	for _, f := range files {
		st, err := os.Stat(f.Path)
		if err != nil {
			return nil, fmt.Errorf("client: upload %s: %w", f.Role, err)
		}
		total += st.Size()
	}
	head, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("client: encode upload request: %w", err)
	}
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() { pw.CloseWithError(writeParts(mw, head, files, &progressCount{total: total, fn: sent})) }()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+api.Prefix+"/images", pr)
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("client: upload: %w", err)
	}
	hreq.Header.Set("Content-Type", mw.FormDataContentType())
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", c.userAgent)
	if c.token != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("client: upload image: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, decodeError(resp)
	}
	var out model.Image
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("client: upload image: decode answer: %w", err)
	}
	return &out, nil
}

func writeParts(mw *multipart.Writer, head []byte, files []UploadFile, pc *progressCount) error {
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="`+api.ImagePartRequest+`"`)
	h.Set("Content-Type", "application/json")
	w, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := w.Write(head); err != nil {
		return err
	}
	for _, f := range files {
		w, err := mw.CreateFormFile(f.Role, filepath.Base(f.Path))
		if err != nil {
			return err
		}
		in, err := os.Open(f.Path)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.MultiWriter(w, pc), in)
		in.Close()
		if err != nil {
			return err
		}
	}
	return mw.Close()
}

// progressCount calls fn at most every 200ms and at the end.
type progressCount struct {
	done, total int64
	last        time.Time
	fn          func(done, total int64)
}

func (p *progressCount) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.fn != nil && (time.Since(p.last) > 200*time.Millisecond || p.done == p.total) {
		p.last = time.Now()
		p.fn(p.done, p.total)
	}
	return len(b), nil
}

// WaitImage polls an image until it leaves the importing phase and
// returns it; progress, when not nil, sees every answer.
func (c *Client) WaitImage(ctx context.Context, name string, progress func(*model.Image)) (*model.Image, error) {
	interval := c.pollMin
	for {
		im, err := c.GetImage(ctx, name)
		switch {
		case err == nil:
			if progress != nil {
				progress(im)
			}
			if im.Phase != model.ImageImporting {
				return im, nil
			}
		case ctx.Err() != nil:
			return nil, fmt.Errorf("client: wait for image %s: %w", name, ctx.Err())
		case !transient(err):
			return nil, err
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return im, fmt.Errorf("client: wait for image %s: %w", name, ctx.Err())
		case <-t.C:
		}
		interval = min(interval*3/2, c.pollMax)
	}
}

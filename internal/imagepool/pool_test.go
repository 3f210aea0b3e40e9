package imagepool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

// fakeTool takes files starting with "RAW" or "QCOW" and "converts" by
// prefixing "converted:".
type fakeTool struct{ converted int }

func (f *fakeTool) Inspect(_ context.Context, path string) (string, int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", 0, err
	}
	switch {
	case strings.HasPrefix(string(b), "RAW"):
		return "raw", 1 << 30, nil
	case strings.HasPrefix(string(b), "QCOW"):
		return "qcow2", 2 << 30, nil
	}
	return "", 0, errors.New("not a disk image")
}

func (f *fakeTool) Convert(_ context.Context, src, _, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	f.converted++
	return os.WriteFile(dst, append([]byte("converted:"), b...), 0o600)
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestPut(t *testing.T) {
	tool := &fakeTool{}
	p, err := New(Config{Dir: t.TempDir(), Tool: tool, MaxSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	bare, err := New(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tests := []struct {
		name      string
		pool      *Pool
		role, in  string
		want      string // sha256 of the stored bytes
		format    string
		vsize     model.Bytes
		wantSHA   string
		err       error
		errSubstr string
	}{
		{name: "kernel kept as is", pool: bare, role: model.ImageKernel, in: "KERNEL", want: sum("KERNEL")},
		{name: "kernel with its checksum", pool: bare, role: model.ImageKernel, in: "KERNEL", want: sum("KERNEL"), wantSHA: strings.ToUpper(sum("KERNEL"))},
		{name: "kernel with a wrong checksum", pool: bare, role: model.ImageKernel, in: "KERNEL", wantSHA: sum("other"), err: ErrBadImage},
		{name: "raw disk converted", pool: p, role: model.ImageDisk, in: "RAW disk", want: sum("converted:RAW disk"), format: "qcow2", vsize: model.GiB},
		{name: "checksum of the source, not the conversion", pool: p, role: model.ImageDisk, in: "QCOW2", want: sum("converted:QCOW2"), format: "qcow2", vsize: 2 * model.GiB, wantSHA: sum("QCOW2")},
		{name: "not a disk image", pool: p, role: model.ImageDisk, in: "<html>", err: ErrBadImage, errSubstr: "not a disk image"},
		{name: "disk without a tool", pool: bare, role: model.ImageDisk, in: "RAW", err: ErrNoTool},
		{name: "empty", pool: p, role: model.ImageKernel, in: "", err: ErrBadImage, errSubstr: "empty"},
		{name: "too big", pool: p, role: model.ImageKernel, in: strings.Repeat("k", 65), err: ErrBadImage, errSubstr: "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, vs, err := tt.pool.Put(ctx, tt.role, strings.NewReader(tt.in), 0, tt.wantSHA, nil)
			if tt.err != nil {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), tt.errSubstr) {
					t.Fatalf("Put = %v, want %v containing %q", err, tt.err, tt.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.SHA256 != tt.want || f.Role != tt.role || f.Format != tt.format || vs != tt.vsize {
				t.Fatalf("Put = %+v, %v; want sha %s format %q vsize %v", f, vs, tt.want, tt.format, tt.vsize)
			}
			r, n, err := tt.pool.Open(f.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			r.Close()
			if n != int64(f.Size) || !tt.pool.Has(f.SHA256) {
				t.Fatalf("stored %d bytes, record says %d", n, f.Size)
			}
		})
	}
	for _, pool := range []*Pool{p, bare} {
		left, _ := os.ReadDir(pool.Dir() + "/.tmp")
		if len(left) != 0 {
			t.Errorf("temporary files left in %s: %d", pool.Dir(), len(left))
		}
	}
}

func TestRemoveKeepsShared(t *testing.T) {
	p, err := New(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, _, _ := p.Put(ctx, model.ImageKernel, strings.NewReader("A"), 0, "", nil)
	b, _, _ := p.Put(ctx, model.ImageKernel, strings.NewReader("B"), 0, "", nil)
	if err := p.Remove([]string{a.SHA256, b.SHA256, "../../etc"}, map[string]bool{b.SHA256: true}); err != nil {
		t.Fatal(err)
	}
	if p.Has(a.SHA256) || !p.Has(b.SHA256) {
		t.Fatalf("after Remove: has a %v (want false), has b %v (want true)", p.Has(a.SHA256), p.Has(b.SHA256))
	}
	if _, _, err := p.Open("../" + b.SHA256); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of a path = %v, want ErrNotFound", err)
	}
}

func TestFetch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/disk.raw":
			w.Write([]byte("RAW from the web"))
		case "/moved":
			http.Redirect(w, r, "/disk.raw", http.StatusFound)
		case "/to-file":
			http.Redirect(w, r, "file:///etc/passwd", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	p, err := New(Config{Dir: t.TempDir(), Tool: &fakeTool{}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, url, errSubstr string
	}{
		{name: "download", url: srv.URL + "/disk.raw"},
		{name: "redirect", url: srv.URL + "/moved"},
		{name: "redirect off the web", url: srv.URL + "/to-file", errSubstr: "want an http:// or https:// URL"},
		{name: "404", url: srv.URL + "/nope", errSubstr: "404"},
		{name: "not http", url: "file:///etc/passwd", errSubstr: "want an http:// or https:// URL"},
		{name: "credentials", url: "http://u:p@127.0.0.1/x", errSubstr: "credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var steps []string
			f, _, err := p.Fetch(context.Background(), nil, model.ImageDisk, tt.url, "", func(pr model.ImageProgress) { steps = append(steps, pr.Step) })
			if tt.errSubstr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errSubstr) {
					t.Fatalf("Fetch = %v, want an error with %q", err, tt.errSubstr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.SHA256 != sum("converted:RAW from the web") || strings.Join(steps, ",") != "convert,checksum" {
				t.Fatalf("Fetch = %+v, steps %v", f, steps)
			}
		})
	}
}

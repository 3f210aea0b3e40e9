package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

const sumA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// imageHandlers serve images from f.images. A URL import walks through
// two importing answers (with progress) before it is ready; an upload
// records the parts it got in f.uploads.
func (f *fakeServer) imageHandlers() map[string]handler {
	if f.images == nil {
		f.images = map[string]*model.Image{}
	}
	polls := map[string]int{}
	notFound := func(name string) *apiErr { return fail(404, api.CodeNotFound, "", "image %q not found", name) }
	return map[string]handler{
		"GET /api/v1/images": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			out := api.ImageList{Items: []model.Image{}}
			for _, im := range f.images {
				out.Items = append(out.Items, *im)
			}
			sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].Name < out.Items[j].Name })
			return out, nil
		},
		"GET /api/v1/images/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			im, ok := f.images[r.PathValue("name")]
			if !ok {
				return nil, notFound(r.PathValue("name"))
			}
			if im.Phase == model.ImageImporting {
				polls[im.Name]++
				im.Progress = &model.ImageProgress{Step: "disk download", Done: model.Bytes(polls[im.Name]) * model.MiB, Total: 2 * model.MiB}
				if polls[im.Name] > 2 {
					im.Phase, im.Progress, im.VirtualSize = model.ImageReady, nil, 2*model.GiB
					im.Files = []model.ImageFile{{Role: model.ImageDisk, Format: "qcow2", Size: 300 * model.MiB, SHA256: sumA}}
				}
			}
			return im, nil
		},
		"DELETE /api/v1/images/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			if _, ok := f.images[r.PathValue("name")]; !ok {
				return nil, notFound(r.PathValue("name"))
			}
			delete(f.images, r.PathValue("name"))
			return nil, nil
		},
		"POST /api/v1/images": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			if mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "multipart/form-data" {
				return f.fakeUpload(w, body, params["boundary"])
			}
			var req api.ImageImportRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			im := &model.Image{Meta: model.Meta{Name: req.Name, CreatedAt: now}, Phase: model.ImageImporting, Source: req.URL}
			f.images[req.Name] = im
			w.WriteHeader(http.StatusAccepted)
			return im, nil
		},
	}
}

func (f *fakeServer) fakeUpload(w http.ResponseWriter, body []byte, boundary string) (any, *apiErr) {
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var req api.ImageImportRequest
	im := &model.Image{Meta: model.Meta{CreatedAt: now}, Phase: model.ImageReady, Source: "upload"}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fail(400, api.CodeBadRequest, "", "multipart: %v", err)
		}
		b, _ := io.ReadAll(p)
		if p.FormName() == api.ImagePartRequest {
			if e := decodeStrict(b, &req); e != nil {
				return nil, e
			}
			continue
		}
		im.Files = append(im.Files, model.ImageFile{Role: p.FormName(), Size: model.Bytes(len(b)), SHA256: sumA})
	}
	im.Name, im.Cmdline, im.Description = req.Name, req.Cmdline, req.Description
	f.images[im.Name] = im
	w.WriteHeader(http.StatusCreated)
	return im, nil
}

func TestImageCommands(t *testing.T) {
	f := newFake(t)
	dir := t.TempDir()
	guest := filepath.Join(dir, "guest")
	for name, content := range map[string]string{"vmlinux": "kernel bytes", "initramfs.cpio.gz": "initrd", "cmdline": "console=ttyS0 quiet\n"} {
		if err := os.MkdirAll(guest, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(guest, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res := f.cli(t, "image", "import", "busybox", guest, "--description", "test guest")
	if res.code != 0 || !strings.Contains(res.stdout, "image busybox ready: kernel") {
		t.Fatalf("import a directory: code %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	im := f.images["busybox"]
	if im == nil || im.Cmdline != "console=ttyS0 quiet" || len(im.Files) != 2 || im.Files[0].Role != model.ImageKernel || im.Files[0].Size != 12 || im.Files[1].Role != model.ImageInitrd {
		t.Fatalf("uploaded image = %+v", im)
	}
	if !strings.Contains(res.stderr, "uploading") || !strings.Contains(res.stderr, "100%") {
		t.Errorf("no upload progress on stderr: %q", res.stderr)
	}

	res = f.cli(t, "image", "import", "debian-12", "https://example.test/debian.qcow2")
	if res.code != 0 || !strings.Contains(res.stdout, "image debian-12 ready: disk") || !strings.Contains(res.stderr, "disk download") {
		t.Fatalf("URL import: code %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	res = f.cli(t, "image", "import", "later", "https://example.test/x.raw", "--no-wait")
	if res.code != 0 || !strings.Contains(res.stdout, "image later importing") {
		t.Fatalf("URL import --no-wait: code %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
	delete(f.images, "later")
	f.images["busybox"].CreatedAt = now.Add(-time.Hour)
	res = f.cli(t, "image", "list")
	golden(t, "image-list", res.stdout)
	res = f.cli(t, "image", "show", "debian-12")
	golden(t, "image-show", res.stdout)
	if res := f.cli(t, "image", "delete", "debian-12"); res.code != 0 || f.images["debian-12"] != nil {
		t.Fatalf("delete: code %d, stderr %q", res.code, res.stderr)
	}
}

func TestImageImportUsage(t *testing.T) {
	f := newFake(t)
	file := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(file, []byte("raw"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing to import", []string{"busybox"}, "give a disk image"},
		{"initrd alone", []string{"x", "--initrd", file}, "--initrd needs --kernel"},
		{"files and URLs", []string{"x", file, "--kernel", "http://example.test/vmlinux"}, "only local files or only URLs"},
		{"empty directory", []string{"x", t.TempDir()}, "holds no disk.qcow2"},
		{"too many arguments", []string{"x", "a", "b"}, "wants NAME and a FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := f.cli(t, append([]string{"image", "import"}, tc.args...)...)
			if res.code != 2 || !strings.Contains(res.stderr, tc.want) {
				t.Fatalf("code %d, stderr %q; want 2 and %q", res.code, res.stderr, tc.want)
			}
		})
	}
	if n := len(f.seen()); n != 0 {
		t.Errorf("usage errors sent %d requests", n)
	}
}

// The JSON answer of a list holds the records as the API gives them.
func TestImageListJSON(t *testing.T) {
	f := newFake(t)
	f.images["tiny"] = &model.Image{Meta: model.Meta{Name: "tiny", CreatedAt: now}, Phase: model.ImageReady,
		Files: []model.ImageFile{{Role: model.ImageKernel, Size: 10, SHA256: sumA}}}
	res := f.cli(t, "image", "list", "-o", "json")
	var got []model.Image
	if err := json.Unmarshal([]byte(res.stdout), &got); err != nil || len(got) != 1 || got[0].Name != "tiny" {
		t.Fatalf("json list = %q (%v)", res.stdout, err)
	}
}

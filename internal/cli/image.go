package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

func (a *app) imageCmd() *cobra.Command {
	return group("image", "Import, list, show and delete boot images (what VMs boot: a disk image, or a kernel and initrd)",
		a.imageListCmd(), a.imageShowCmd(), a.imageImportCmd(), a.imageDeleteCmd())
}

func (a *app) imageListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List images",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			ims, err := c.ListImages(cmd.Context())
			if err != nil {
				return err
			}
			if ims == nil {
				ims = []model.Image{}
			}
			return a.print(cmd, ims, func(w io.Writer) {
				a.imageTable(w, ims)
				if len(ims) == 0 {
					fmt.Fprintln(w, "(no images: import one with 'vpool image import NAME FILE|URL')")
				}
			})
		},
	}
}

// imageBoots says what an image boots: disk, kernel, or both.
func imageBoots(im *model.Image) string {
	var parts []string
	if im.File(model.ImageDisk) != nil {
		parts = append(parts, "disk")
	}
	if im.File(model.ImageKernel) != nil {
		parts = append(parts, "kernel")
	}
	return orDash(strings.Join(parts, "+"))
}

func imageSize(im *model.Image) model.Bytes {
	var n model.Bytes
	for _, f := range im.Files {
		n += f.Size
	}
	return n
}

func (a *app) imageTable(w io.Writer, ims []model.Image) {
	now := a.env.now()
	row(w, "NAME", "PHASE", "BOOTS", "SIZE", "DISK SIZE", "AGE", "DESCRIPTION")
	for i := range ims {
		im := &ims[i]
		vs := "-"
		if im.VirtualSize > 0 {
			vs = im.VirtualSize.String()
		}
		row(w, im.Name, im.Phase, imageBoots(im), imageSize(im), vs, age(now, im.CreatedAt), orDash(im.Description))
	}
}

func (a *app) imageShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Aliases: []string{"get", "describe"},
		Short:   "Show an image: its files with their SHA-256, where it came from",
		Args:    exactArgs(1, "one image name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.outputClient()
			if err != nil {
				return err
			}
			im, err := c.GetImage(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.print(cmd, im, func(w io.Writer) { a.describeImage(w, im) })
		},
	}
}

func (a *app) describeImage(w io.Writer, im *model.Image) {
	now := a.env.now()
	field(w, "Name", im.Name)
	field(w, "Description", im.Description)
	field(w, "Phase", im.Phase)
	field(w, "Error", im.Error)
	field(w, "Boots", imageBoots(im))
	field(w, "Source", im.Source)
	if im.VirtualSize > 0 {
		field(w, "Disk size", im.VirtualSize.String()+" (a VM's first disk is at least this big)")
	}
	field(w, "Cmdline", im.Cmdline)
	for _, f := range im.Files {
		desc := f.Size.String() + " sha256:" + f.SHA256
		if f.Format != "" {
			desc = f.Format + " " + desc
		}
		field(w, "File "+f.Role, desc)
	}
	if pr := im.Progress; pr != nil {
		field(w, "Progress", imageProgressText(pr))
	}
	field(w, "Pool", im.Pool)
	field(w, "Created", stamp(now, im.CreatedAt))
}

func imageProgressText(pr *model.ImageProgress) string {
	if pr.Total > 0 {
		f := float64(pr.Done) / float64(pr.Total)
		return fmt.Sprintf("%s %s %3.0f%% %s of %s", pr.Step, bar(f, 20), f*100, pr.Done, pr.Total)
	}
	if pr.Done > 0 {
		return fmt.Sprintf("%s %s", pr.Step, pr.Done)
	}
	return pr.Step
}

func (a *app) imageDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME...",
		Aliases: []string{"rm"},
		Short:   "Delete images no VM uses",
		Args:    minArgs(1, "at least one image name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			return forEach(cmd, args, "image", func(name string) (string, error) {
				if err := c.DeleteImage(cmd.Context(), name); err != nil {
					return "", err
				}
				return "image " + name + " deleted", nil
			})
		},
	}
}

// imageImportOpts are the flags of `image import`.
type imageImportOpts struct {
	kernel, initrd, cmdline, description, sha256 string
	wait                                         waitOpts
	timeout                                      time.Duration
}

func (a *app) imageImportCmd() *cobra.Command {
	o := &imageImportOpts{}
	cmd := &cobra.Command{
		Use:   "import NAME [FILE|DIR|URL]",
		Short: "Import an image: a qcow2 or raw disk image (a cloud image), or a kernel and initrd",
		Long: `Import an image from a local file (uploaded to the server) or an http(s)
URL (downloaded by the server). A disk image (qcow2 or raw) is converted to
qcow2 and stored in the server's image pool under its SHA-256; every VM's
first disk is a thin linked clone of it. A directory is read as an image
directory: vmlinux (or kernel), initramfs.cpio.gz (or initrd), cmdline,
disk.qcow2 (or disk.raw). Hosts fetch the files when a VM first needs them.

A local import waits until the image is ready, showing the upload; a URL
import shows the download and returns at once with --no-wait.`,
		Example: `  vpool image import debian-12 https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2
  vpool image import mydisk ./disk.raw --description "our appliance"
  vpool image import busybox ~/.cache/vpool/guest/<hash>
  vpool image import tiny --kernel vmlinux --initrd initrd.gz --cmdline "console=ttyS0"`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("%s wants NAME and a FILE, DIR or URL (or --kernel)", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			src := ""
			if len(args) == 2 {
				src = args[1]
			}
			return a.imageImport(cmd, args[0], src, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kernel, "kernel", "", "a kernel to boot directly (file or URL)")
	f.StringVar(&o.initrd, "initrd", "", "the initrd that goes with --kernel (file or URL)")
	f.StringVar(&o.cmdline, "cmdline", "", "the kernel command line of --kernel")
	f.StringVar(&o.description, "description", "", "what the image is")
	f.StringVar(&o.sha256, "sha256", "", "the SHA-256 the disk (or, without one, the kernel) must have, e.g. from the distribution's SHA256SUMS")
	o.wait.flags(cmd, "a URL import is done (a local file is always uploaded first)")
	f.DurationVar(&o.timeout, "timeout", time.Hour, "how long to wait for a URL import")
	return cmd
}

func isURL(s string) bool { return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") }

// importSources turns the arguments into an import request and the local
// files to upload; mixing URLs with local files is refused.
func importSources(name, src string, o *imageImportOpts) (api.ImageImportRequest, []client.UploadFile, error) {
	req := api.ImageImportRequest{Name: name, Description: o.description, Cmdline: o.cmdline, SHA256: o.sha256}
	var files []client.UploadFile
	if src != "" && !isURL(src) {
		if st, err := os.Stat(src); err == nil && st.IsDir() {
			return dirSources(req, src, o)
		}
	}
	set := func(role, v string, u *string) {
		switch {
		case v == "":
		case isURL(v):
			*u = v
		default:
			files = append(files, client.UploadFile{Role: role, Path: v})
		}
	}
	set(model.ImageDisk, src, &req.URL)
	set(model.ImageKernel, o.kernel, &req.KernelURL)
	set(model.ImageInitrd, o.initrd, &req.InitrdURL)
	switch {
	case o.initrd != "" && o.kernel == "":
		return req, nil, usagef("image import: --initrd needs --kernel")
	case src == "" && o.kernel == "":
		return req, nil, usagef("image import: give a disk image (FILE or URL), a directory, or --kernel")
	case len(files) > 0 && (req.URL != "" || req.KernelURL != "" || req.InitrdURL != ""):
		return req, nil, usagef("image import: give only local files or only URLs, not both")
	}
	return req, files, nil
}

// dirSources reads an image directory (the layout of scripts/build-guest.sh).
func dirSources(req api.ImageImportRequest, dir string, o *imageImportOpts) (api.ImageImportRequest, []client.UploadFile, error) {
	if o.kernel != "" || o.initrd != "" {
		return req, nil, usagef("image import: a directory brings its own kernel and initrd; drop --kernel/--initrd")
	}
	first := func(names ...string) string {
		for _, n := range names {
			p := filepath.Join(dir, n)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p
			}
		}
		return ""
	}
	var files []client.UploadFile
	if d := first("disk.qcow2", "disk.raw"); d != "" {
		files = append(files, client.UploadFile{Role: model.ImageDisk, Path: d})
	}
	if k := first("vmlinux", "kernel"); k != "" {
		files = append(files, client.UploadFile{Role: model.ImageKernel, Path: k})
		if i := first("initramfs.cpio.gz", "initrd"); i != "" {
			files = append(files, client.UploadFile{Role: model.ImageInitrd, Path: i})
		}
	}
	if len(files) == 0 {
		return req, nil, usagef("image import: %s holds no disk.qcow2, disk.raw, vmlinux or kernel", dir)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && req.Cmdline == "" {
		req.Cmdline = strings.TrimSpace(string(b))
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return req, nil, fmt.Errorf("image import: %w", err)
	}
	return req, files, nil
}

func (a *app) imageImport(cmd *cobra.Command, name, src string, o *imageImportOpts) error {
	req, files, err := importSources(name, src, o)
	if err != nil {
		return err
	}
	c, err := a.outputClient()
	if err != nil {
		return err
	}
	var im *model.Image
	if len(files) > 0 {
		p := newProgressBar(errw(cmd), a.env.now)
		im, err = c.UploadImage(cmd.Context(), req, files, func(done, total int64) {
			f := float64(done) / float64(max(total, 1))
			step := "upload"
			if done == total {
				step = "uploaded" // always shown
			}
			p.show(step, fmt.Sprintf("uploading %s %3.0f%% %s of %s", bar(f, 20), f*100, model.Bytes(done), model.Bytes(total)))
		})
		p.done()
	} else {
		im, err = c.ImportImageURL(cmd.Context(), req)
		if err == nil && o.wait.enabled() {
			im, err = a.waitImage(cmd, c, im.Name, o.timeout)
		}
	}
	if err != nil {
		return err
	}
	if im.Phase == model.ImageFailed {
		return fmt.Errorf("image %s: import failed: %s", im.Name, im.Error)
	}
	return a.print(cmd, im, func(w io.Writer) {
		if im.Phase == model.ImageImporting {
			fmt.Fprintf(w, "image %s importing (follow it with 'vpool image show %s')\n", im.Name, im.Name)
			return
		}
		fmt.Fprintf(w, "image %s ready: %s, %s\n", im.Name, imageBoots(im), imageSize(im))
	})
}

func (a *app) waitImage(cmd *cobra.Command, c *client.Client, name string, timeout time.Duration) (*model.Image, error) {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	p := newProgressBar(errw(cmd), a.env.now)
	im, err := c.WaitImage(ctx, name, func(im *model.Image) {
		if im.Progress != nil {
			p.show(im.Progress.Step, "importing "+imageProgressText(im.Progress))
		}
	})
	p.done()
	if errors.Is(err, context.DeadlineExceeded) && cmd.Context().Err() == nil {
		return im, fmt.Errorf("image %s: still importing after %s (wait longer with --timeout, or follow it with 'vpool image show %s')", name, timeout, name)
	}
	return im, err
}

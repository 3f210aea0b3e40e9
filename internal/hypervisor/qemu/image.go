package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"

	"github.com/vpool/vpool/internal/hypervisor"
)

// ImageTool checks and converts disk images for the server's image pool
// with qemu-img (it implements imagepool.Tool). Only standalone qcow2 and
// raw images are taken: an uploaded qcow2 naming a backing file or an
// external data file could make qemu-img read any file of the server.
type ImageTool struct {
	// QEMUImg is the qemu-img binary (default "qemu-img" in PATH).
	QEMUImg string
}

// imageInspect is the part of `qemu-img info --output=json` Inspect reads.
type imageInspect struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	BackingFilename string `json:"backing-filename"`
	FullBacking     string `json:"full-backing-filename"`
	FormatSpecific  struct {
		Data struct {
			DataFile string `json:"data-file"`
		} `json:"data"`
	} `json:"format-specific"`
}

func (t ImageTool) run(ctx context.Context, args ...string) ([]byte, error) {
	name := t.QEMUImg
	if name == "" {
		name = "qemu-img"
	}
	bin, err := binary(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("qemu: qemu-img %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Inspect returns the format and virtual size of a disk image, refusing
// formats other than qcow2 and raw, backing files and data files.
func (t ImageTool) Inspect(ctx context.Context, path string) (string, int64, error) {
	out, err := t.run(ctx, "info", "--output=json", path)
	if err != nil {
		return "", 0, err
	}
	var ii imageInspect
	if err := json.Unmarshal(out, &ii); err != nil {
		return "", 0, fmt.Errorf("qemu: qemu-img info: %w", err)
	}
	switch {
	case ii.Format != "qcow2" && ii.Format != "raw":
		return "", 0, fmt.Errorf("qemu: the disk image is %s; import qcow2 or raw (convert it with qemu-img convert -O qcow2)", ii.Format)
	case ii.BackingFilename != "" || ii.FullBacking != "":
		return "", 0, fmt.Errorf("qemu: the qcow2 image names a backing file (%s); import a standalone image (qemu-img convert -O qcow2 flattens it)", ii.BackingFilename)
	case ii.FormatSpecific.Data.DataFile != "":
		return "", 0, fmt.Errorf("qemu: the qcow2 image keeps its data in an external file (%s); import a standalone image", ii.FormatSpecific.Data.DataFile)
	case ii.VirtualSize <= 0:
		return "", 0, fmt.Errorf("qemu: the disk image reports no size")
	}
	return ii.Format, ii.VirtualSize, nil
}

// Convert writes src (of format qcow2 or raw) to dst as a standalone,
// compact qcow2.
func (t ImageTool) Convert(ctx context.Context, src, format, dst string) error {
	if format != "qcow2" && format != "raw" {
		return fmt.Errorf("qemu: convert: format %q is neither qcow2 nor raw", format)
	}
	_, err := t.run(ctx, "convert", "-q", "-f", format, "-O", "qcow2", src, dst)
	return err
}

var _ hypervisor.DiskResizer = (*Driver)(nil)

package model

import (
	"fmt"
	"regexp"
	"strings"
)

// ImagePhase is where an image is in its life.
type ImagePhase string

// Image phases. An upload is importing while its bytes arrive; a URL
// import while the server downloads and converts. Only a ready image can
// back a VM; deleting is held while the server checks that no VM names it.
const (
	ImageImporting ImagePhase = "importing"
	ImageReady     ImagePhase = "ready"
	ImageFailed    ImagePhase = "failed"
	ImageDeleting  ImagePhase = "deleting"
)

// Image file roles.
const (
	ImageDisk   = "disk"   // a base disk: VMs' first disks are linked clones of it
	ImageKernel = "kernel" // a kernel for direct boot
	ImageInitrd = "initrd" // the initrd that goes with the kernel
)

// Image is a boot image, cluster-wide (/vpool/images/<name>): a base disk
// (stored as qcow2, opened read-only and shared by every linked clone),
// and/or a kernel and initrd booted directly with Cmdline. Its files live
// in the server's image pool under their SHA-256; hosts fetch them over
// the agent protocol and keep them in their own cache (docs/images.md).
type Image struct {
	Meta
	Description string     `json:"description,omitempty"`
	Phase       ImagePhase `json:"phase"`
	Error       string     `json:"error,omitempty"`
	// Source says where the image came from: a URL, or "upload" with the
	// uploaded file names.
	Source string      `json:"source,omitempty"`
	Files  []ImageFile `json:"files,omitempty"`
	// Cmdline is the kernel command line of a direct-boot image.
	Cmdline string `json:"cmdline,omitempty"`
	// VirtualSize is the base disk's size as a guest sees it; a VM's
	// first disk is made at least this big.
	VirtualSize Bytes `json:"virtualSize,omitempty"`
	// Pool names the image pool that holds the files (a server's host
	// name and pool directory); servers sharing one pool directory on
	// shared storage serve every image.
	Pool string `json:"pool,omitempty"`
	// Progress counts the bytes of an import in flight.
	Progress *ImageProgress `json:"progress,omitempty"`
}

// ImageFile is one stored file of an image.
type ImageFile struct {
	Role   string `json:"role"`             // disk | kernel | initrd
	Format string `json:"format,omitempty"` // qcow2 for a disk; empty otherwise
	Size   Bytes  `json:"size"`             // bytes stored
	SHA256 string `json:"sha256"`           // hex; also the file's name in pools and caches
}

// ImageProgress is how far an import has come.
type ImageProgress struct {
	Step  string `json:"step"` // download | convert | checksum
	Done  Bytes  `json:"done"`
	Total Bytes  `json:"total,omitempty"` // 0 when the source did not say
}

// File returns the image's file of a role, or nil.
func (im *Image) File(role string) *ImageFile {
	for i := range im.Files {
		if im.Files[i].Role == role {
			return &im.Files[i]
		}
	}
	return nil
}

// Bootable says whether the image holds something a VM can boot: a base
// disk, or a kernel.
func (im *Image) Bootable() bool {
	return im.File(ImageDisk) != nil || im.File(ImageKernel) != nil
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// ValidSHA256 checks that s is a lowercase hex SHA-256.
func ValidSHA256(field, s string) error {
	if !sha256Hex.MatchString(s) {
		return fieldErr(field, "%q is not a SHA-256 (64 lowercase hex digits)", s)
	}
	return nil
}

// MaxCmdline bounds an image's kernel command line (Linux's own limit on
// x86 is 2 KiB).
const MaxCmdline = 2048

// Validate checks a stored image: name, files and command line.
func (im *Image) Validate() error {
	if err := ValidName("name", im.Name); err != nil {
		return err
	}
	if len(im.Description) > 256 {
		return fieldErr("description", "is %d characters, more than 256", len(im.Description))
	}
	if len(im.Cmdline) > MaxCmdline || strings.ContainsAny(im.Cmdline, "\n\r\x00") {
		return fieldErr("cmdline", "must be one line of at most %d bytes", MaxCmdline)
	}
	roles := map[string]bool{}
	for i, f := range im.Files {
		field := fmt.Sprintf("files[%d]", i)
		switch f.Role {
		case ImageDisk, ImageKernel, ImageInitrd:
		default:
			return fieldErr(field+".role", "%q is not a file role (disk, kernel or initrd)", f.Role)
		}
		if roles[f.Role] {
			return fieldErr(field+".role", "the image has two %s files", f.Role)
		}
		roles[f.Role] = true
		if err := ValidSHA256(field+".sha256", f.SHA256); err != nil {
			return err
		}
	}
	if roles[ImageInitrd] && !roles[ImageKernel] {
		return fieldErr("initrd", "an initrd needs a kernel")
	}
	if im.Phase == ImageReady && !im.Bootable() {
		return fieldErr("files", "an image needs a disk or a kernel")
	}
	return nil
}

package api

import "github.com/vpool/vpool/internal/model"

// ImageImportRequest imports an image (POST /images, admins). As JSON, the
// server downloads the URLs (http or https) in the background and answers
// 202 with the image importing; as multipart/form-data, a part named
// "request" holding this object comes first and parts named "disk",
// "kernel" and "initrd" carry the files (the URLs stay empty), and the
// server answers 201 once the image is ready. A disk (qcow2 or raw) is
// converted to qcow2; SHA256, when given, is the checksum the first file
// (the disk, else the kernel) must have as downloaded or uploaded.
type ImageImportRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	URL         string `json:"url,omitempty"`       // the base disk
	KernelURL   string `json:"kernelUrl,omitempty"` // a kernel for direct boot
	InitrdURL   string `json:"initrdUrl,omitempty"`
	Cmdline     string `json:"cmdline,omitempty"`
	SHA256      string `json:"sha256,omitempty"`
}

// ImageList is the body of GET /images.
type ImageList struct {
	Items []model.Image `json:"items"`
}

// Multipart part names of an image upload.
const (
	ImagePartRequest = "request"
)

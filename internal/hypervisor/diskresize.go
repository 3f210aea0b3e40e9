package hypervisor

import (
	"context"

	"github.com/vpool/vpool/internal/model"
)

// DiskResizer grows a VM's disk: live on a running VM (the guest sees the
// new size at once), in the image on a stopped one. Shrinking is refused
// with ErrUnsupported (it would cut a file system); an unknown disk is
// ErrNotFound.
type DiskResizer interface {
	ResizeDisk(ctx context.Context, id, disk string, size model.Bytes) error
}

package client

import (
	"context"
	"net/http"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// StopVMWith stops a VM as req says: forced (the plug pulled at once, also
// ending a graceful stop in progress) or with a timeout for the guest.
func (c *Client) StopVMWith(ctx context.Context, project, name string, req api.VMStopRequest) (*model.VM, error) {
	var out *model.VM
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/vms/"+esc(name)+"/stop", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// ResizeDisk grows a disk of a VM (live when it runs). The VM's
// status.disks shows the new size once its host applied it.
func (c *Client) ResizeDisk(ctx context.Context, project, vm, disk string, size model.Bytes) (*model.VM, error) {
	var out model.VM
	if err := c.do(ctx, http.MethodPatch, api.Prefix+"/vms/"+esc(vm)+"/disks/"+esc(disk), projectQuery(project), api.DiskResizeRequest{Size: size}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

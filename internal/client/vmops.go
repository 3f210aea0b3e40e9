package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// --- snapshots ---

func snapPath(vm string) string { return api.Prefix + "/vms/" + esc(vm) + "/snapshots" }

// ListSnapshots lists a VM's snapshots.
func (c *Client) ListSnapshots(ctx context.Context, project, vm string) ([]model.Snapshot, error) {
	var out api.SnapshotList
	if err := c.do(ctx, http.MethodGet, snapPath(vm), projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}

// CreateSnapshot asks for a snapshot; it is ready once its phase is.
func (c *Client) CreateSnapshot(ctx context.Context, project, vm string, req api.SnapshotCreateRequest) (*model.Snapshot, error) {
	var out model.Snapshot
	if err := c.do(ctx, http.MethodPost, snapPath(vm), projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetSnapshot shows one snapshot.
func (c *Client) GetSnapshot(ctx context.Context, project, vm, name string) (*model.Snapshot, error) {
	var out model.Snapshot
	if err := c.do(ctx, http.MethodGet, snapPath(vm)+"/"+esc(name), projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevertSnapshot asks for a revert; it is done when the snapshot is ready
// again (with Error set when it failed).
func (c *Client) RevertSnapshot(ctx context.Context, project, vm, name string) (*model.Snapshot, error) {
	var out model.Snapshot
	if err := c.do(ctx, http.MethodPost, snapPath(vm)+"/"+esc(name)+"/revert", projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteSnapshot asks for a deletion; the snapshot is gone once GetSnapshot
// answers not found.
func (c *Client) DeleteSnapshot(ctx context.Context, project, vm, name string) error {
	return c.do(ctx, http.MethodDelete, snapPath(vm)+"/"+esc(name), projectQuery(project), nil, nil)
}

// ErrSnapshotFailed is returned by WaitSnapshot when the operation failed.
var ErrSnapshotFailed = errors.New("client: snapshot operation failed")

// WaitSnapshot polls a snapshot until it leaves the phase busy (pending,
// reverting or deleting). It returns nil and no error when the snapshot
// is gone, and ErrSnapshotFailed (wrapping the agent's message) when the
// operation failed.
func (c *Client) WaitSnapshot(ctx context.Context, project, vm, name string, busy model.SnapshotPhase) (*model.Snapshot, error) {
	interval := c.pollMin
	for {
		s, err := c.GetSnapshot(ctx, project, vm, name)
		switch {
		case IsNotFound(err):
			return nil, nil
		case err != nil && !transient(err):
			return nil, err
		case err == nil && s.Phase != busy:
			if s.Phase == model.SnapshotFailed || s.Error != "" {
				return s, fmt.Errorf("%w: %s", ErrSnapshotFailed, s.Error)
			}
			return s, nil
		}
		if err := sleep(ctx, interval); err != nil {
			return nil, fmt.Errorf("client: wait for snapshot %s: %w", name, err)
		}
		interval = min(interval*3/2, c.pollMax)
	}
}

// --- disks ---

// AddDisk asks for a new disk on a VM; the VM's agent plugs it in.
func (c *Client) AddDisk(ctx context.Context, project, vm string, req api.DiskAddRequest) (*model.VM, error) {
	var out model.VM
	if err := c.do(ctx, http.MethodPost, api.Prefix+"/vms/"+esc(vm)+"/disks", projectQuery(project), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveDisk asks for a disk to be unplugged and deleted.
func (c *Client) RemoveDisk(ctx context.Context, project, vm, disk string) (*model.VM, error) {
	var out model.VM
	if err := c.do(ctx, http.MethodDelete, api.Prefix+"/vms/"+esc(vm)+"/disks/"+esc(disk), projectQuery(project), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// --- console ---

// ConsoleLog returns the tail (up to tail bytes; 0: the server's default)
// of a VM's serial console log.
func (c *Client) ConsoleLog(ctx context.Context, project, vm string, tail int) (*api.ConsoleLog, error) {
	q := projectQuery(project)
	if tail > 0 {
		if q == nil {
			q = url.Values{}
		}
		q.Set("tail", strconv.Itoa(tail))
	}
	var out api.ConsoleLog
	if err := c.do(ctx, http.MethodGet, api.Prefix+"/vms/"+esc(vm)+"/console/log", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Console attaches to a VM's serial console. Reading returns what the
// guest prints; writing types on its console; Close detaches. ctx bounds
// the whole session.
func (c *Client) Console(ctx context.Context, project, vm string) (net.Conn, error) {
	u := c.base + api.Prefix + "/vms/" + esc(vm) + "/console"
	if q := projectQuery(project); len(q) > 0 {
		u += "?" + q.Encode()
	}
	u = "ws" + strings.TrimPrefix(u, "http")
	h := http.Header{}
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
	h.Set("User-Agent", c.userAgent)
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: c.http, HTTPHeader: h})
	if err != nil {
		if resp != nil && resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, decodeError(resp)
		}
		return nil, fmt.Errorf("client: console of %s: %w", vm, err)
	}
	ws.SetReadLimit(1 << 20)
	return websocket.NetConn(ctx, ws, websocket.MessageBinary), nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

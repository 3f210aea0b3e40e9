package qemu

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// The on-disk layout (see docs/qemu.md):
//
//	<StateDir>/vms/<id>/config.json   the record below (0600)
//	<StateDir>/vms/<id>/qmp.sock      QMP (or a symlink into RunDir)
//	<StateDir>/vms/<id>/console.sock  serial console
//	<StateDir>/vms/<id>/serial.log    everything the console printed
//	<StateDir>/vms/<id>/qemu.pid      written by QEMU (-pidfile)
//	<StateDir>/vms/<id>/qemu.log      QEMU's stderr
//	<pool>/<id>/<disk>.<layer>.qcow2  disk layers; <pool>/<id>/<snap>.state memory
const recordVersion = 1

// record is everything the driver knows about one VM; it is rewritten
// atomically after every change so a new driver can take over.
type record struct {
	Version   int                 `json:"version"`
	Config    hypervisor.VMConfig `json:"config"`
	CreatedAt time.Time           `json:"createdAt"`
	Disks     []diskRec           `json:"disks"`
	NICs      []nicRec            `json:"nics,omitempty"`
	Snapshots []snapRec           `json:"snapshots,omitempty"`
	// LastExit is how the last QEMU process ended: stopped or crashed.
	LastExit hypervisor.State `json:"lastExit,omitempty"`
	// User is the uid and gid the VM's QEMU runs as and its files belong
	// to (vmuser.go); nil: the agent's own user (a driver without root,
	// or a record from before per-VM users).
	User *vmUser `json:"user,omitempty"`
	// Run describes the live QEMU process; nil when none was started.
	Run *runRec `json:"run,omitempty"`
}

// diskRec is one virtual disk: a tree of qcow2 layers in a pool
// directory, over an optional shared, read-only image base.
type diskRec struct {
	Name       string     `json:"name"`
	Index      int        `json:"index"` // stable: names nodes and the device (vd<index>)
	Pool       string     `json:"pool"`
	Dir        string     `json:"dir"`
	Size       int64      `json:"size"`
	Encrypted  bool       `json:"encrypted,omitempty"`
	Base       string     `json:"base,omitempty"` // image base file
	BaseFormat string     `json:"baseFormat,omitempty"`
	Layers     []layerRec `json:"layers"`
	Active     int        `json:"active"` // id of the writable top layer
	NextLayer  int        `json:"nextLayer"`
}

// layerRec is one qcow2 file; Parent is the layer below (-1: the image
// base or nothing).
type layerRec struct {
	ID     int    `json:"id"`
	Parent int    `json:"parent"`
	File   string `json:"file"`
}

type nicRec struct {
	ID  string `json:"id"`
	MAC string `json:"mac"`
	Tap string `json:"tap,omitempty"` // set while running on a bridge
	// Name is the spec NIC's name; Port, when the agent gave one, the
	// tap name, bridge and MTU of a vpool network (network.go).
	Name string              `json:"name,omitempty"`
	Port *hypervisor.NICPort `json:"port,omitempty"`
}

// snapRec is a snapshot: the frozen layer of every disk, and for memory
// snapshots the saved device state and the size it was taken at.
type snapRec struct {
	Name      string         `json:"name"`
	CreatedAt time.Time      `json:"createdAt"`
	Layers    map[string]int `json:"layers"` // disk name → layer id
	StateFile string         `json:"stateFile,omitempty"`
	VCPUs     int            `json:"vcpus,omitempty"`
	Memory    model.Bytes    `json:"memory,omitempty"`
}

// runRec is the live process as a re-attaching driver needs it.
type runRec struct {
	Pid        int       `json:"pid"`
	StartedAt  time.Time `json:"startedAt"`
	QMP        string    `json:"qmp"`
	Console    string    `json:"console"`
	BootVCPUs  int       `json:"bootVcpus"`
	MaxVCPUs   int       `json:"maxVcpus"`
	BootMemory int64     `json:"bootMemory"`
	MaxMemory  int64     `json:"maxMemory"`
	MemSlots   int       `json:"memSlots"`
	HotCPUs    []string  `json:"hotCpus,omitempty"` // device ids of hot-added vCPUs
	// Ports are the boot's hot-plug ports; DiskPorts maps a disk device id
	// to the port it sits on.
	Ports     []string          `json:"ports,omitempty"`
	DiskPorts map[string]string `json:"diskPorts,omitempty"`
	DIMMs     []dimmRec         `json:"dimms,omitempty"`
	Cmdline   []string          `json:"cmdline"`
	// Helper marks the paused QEMU of a cold migration (startOpts.helper):
	// the VM counts as not running (LastExit holds its state).
	Helper bool `json:"helper,omitempty"`
}

type dimmRec struct {
	ID   string `json:"id"`
	Size int64  `json:"size"`
}

var idRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,126}[a-z0-9])?$`)

func validID(id string) error {
	if !idRe.MatchString(id) || filepath.Base(id) != id || id == "." || id == ".." {
		return fmt.Errorf("qemu: bad vm id %q: use lowercase letters, digits, '.' and '-'", id)
	}
	return nil
}

// fileNameRe is what a name that becomes part of a file name may hold
// (disk names: <pool>/<id>/<disk>.<layer>.qcow2, keys/<id>/<disk>.key):
// one path element, never "..", whatever the API let through.
var fileNameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// macRe is a MAC address as QEMU takes it: six hex octets.
var macRe = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)

// checkConfig refuses a VM configuration whose values would reach paths
// or QEMU unchecked: the id, disk names (file names) and MACs. The API
// validates them too; the driver does not rely on it.
func checkConfig(cfg hypervisor.VMConfig) error {
	if err := validID(cfg.ID); err != nil {
		return err
	}
	for i, sd := range cfg.Spec.Disks {
		if name := diskName(sd, i); !fileNameRe.MatchString(name) {
			return fmt.Errorf("qemu: %s: disk %d: name %q is not a DNS label", cfg.ID, i, name)
		}
	}
	for i, n := range cfg.Spec.NICs {
		if n.MAC != "" && !macRe.MatchString(n.MAC) {
			return fmt.Errorf("qemu: %s: nic %d: MAC %q is not six hex octets such as 52:54:00:12:34:56", cfg.ID, i, n.MAC)
		}
	}
	return nil
}

func (d *Driver) vmDir(id string) string { return filepath.Join(d.cfg.StateDir, "vms", id) }

func (d *Driver) recordPath(id string) string { return filepath.Join(d.vmDir(id), "config.json") }

// socketPath returns where a VM's socket named name lives: in its VM dir
// when the path fits a sockaddr_un, else in RunDir under a hash.
func (d *Driver) socketPath(id, name string) string {
	p := filepath.Join(d.vmDir(id), name)
	if len(p) < 100 {
		return p
	}
	h := sha256.Sum256([]byte(d.vmDir(id)))
	return filepath.Join(d.cfg.RunDir, hex.EncodeToString(h[:8])+"."+name)
}

func (d *Driver) saveRecord(r *record) error {
	r.Version = recordVersion
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("qemu: encoding record: %w", err)
	}
	return writeFileAtomic(d.recordPath(r.Config.ID), b, 0o600)
}

func (d *Driver) loadRecord(id string) (*record, error) {
	b, err := os.ReadFile(d.recordPath(id))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("qemu: %s: %w", id, hypervisor.ErrNotFound)
		}
		return nil, fmt.Errorf("qemu: reading record: %w", err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("qemu: record of %s is corrupt: %w", id, err)
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("qemu: record of %s has version %d, want %d", id, r.Version, recordVersion)
	}
	return &r, nil
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	_, werr := tmp.Write(b)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr, os.Chmod(tmp.Name(), mode)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("qemu: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("qemu: %w", err)
	}
	return nil
}

// layer returns the layer with id.
func (dr *diskRec) layer(id int) *layerRec {
	for i := range dr.Layers {
		if dr.Layers[i].ID == id {
			return &dr.Layers[i]
		}
	}
	return nil
}

// chain returns the layers from the bottom to the active one.
func (dr *diskRec) chain() []layerRec {
	var rev []layerRec
	for id := dr.Active; id >= 0; {
		l := dr.layer(id)
		if l == nil {
			break
		}
		rev = append(rev, *l)
		id = l.Parent
	}
	out := make([]layerRec, len(rev))
	for i, l := range rev {
		out[len(rev)-1-i] = l
	}
	return out
}

// children returns the ids of the layers whose parent is id.
func (dr *diskRec) children(id int) []int {
	var out []int
	for _, l := range dr.Layers {
		if l.Parent == id {
			out = append(out, l.ID)
		}
	}
	return out
}

func (dr *diskRec) node(layer int) string { return fmt.Sprintf("d%dl%d", dr.Index, layer) }
func (dr *diskRec) baseNode() string      { return fmt.Sprintf("d%db", dr.Index) }
func (dr *diskRec) deviceID() string      { return fmt.Sprintf("vd%d", dr.Index) }
func (dr *diskRec) secretID() string      { return fmt.Sprintf("sec%d", dr.Index) }

// layers renders the drive's chain for the command line.
func (dr *diskRec) driveLayers() []Layer {
	var out []Layer
	if dr.Base != "" {
		out = append(out, Layer{Node: dr.baseNode(), File: dr.Base, Format: dr.BaseFormat, ReadOnly: true})
	}
	ch := dr.chain()
	for i, l := range ch {
		ly := Layer{Node: dr.node(l.ID), File: l.File, Format: "qcow2", ReadOnly: i < len(ch)-1}
		if dr.Encrypted {
			ly.Secret = dr.secretID()
		}
		out = append(out, ly)
	}
	return out
}

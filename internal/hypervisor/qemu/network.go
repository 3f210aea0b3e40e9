package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	bin "encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"github.com/vpool/vpool/internal/hypervisor"
)

// resolveNetwork picks the network mode: a bridge needs root, /dev/net/tun
// and iproute2; auto falls back to user-mode networking without them.
func (d *Driver) resolveNetwork() (string, error) {
	switch d.cfg.Network {
	case NetUser, NetNone:
		return d.cfg.Network, nil
	case NetBridge:
		if err := d.ensureBridge(context.Background()); err != nil {
			return "", err
		}
		return NetBridge, nil
	case NetAuto:
		if err := d.ensureBridge(context.Background()); err != nil {
			d.log.Info("qemu: no bridge; VMs get user-mode networking", "bridge", d.cfg.Bridge, "err", err)
			return NetUser, nil
		}
		return NetBridge, nil
	}
	return "", fmt.Errorf("qemu: unknown network mode %q (want auto, bridge, user or none)", d.cfg.Network)
}

func ipCmd(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "ip", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("qemu: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

// ensureBridge makes the host bridge (no address, no uplink: full virtual
// networks are the netvirt package's job) and brings it up.
func (d *Driver) ensureBridge(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("qemu: a bridge needs root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("qemu: %w", err)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("qemu: iproute2 missing: %w", err)
	}
	br := d.cfg.Bridge
	if linkExists(br) && d.bridgeUp.Load() {
		return nil
	}
	if !linkExists(br) {
		if err := ipCmd(ctx, "link", "add", br, "type", "bridge"); err != nil && !linkExists(br) {
			return err
		}
	}
	if err := ipCmd(ctx, "link", "set", br, "up"); err != nil {
		return err
	}
	d.bridgeUp.Store(true)
	return nil
}

// tapName is the tap of NIC i of VM id: "vp" + 10 hex digits of a
// hash + the index, within the 15-character interface name limit.
//
// The name hashes the driver's state dir with the VM id: the source and
// the target of a migration between two drivers on one machine (tests,
// several agents on one box) must not share a tap. They did, and the
// target's MigrateIn deleted the running source's tap to make its own,
// and the source's clean-up then deleted the target's.
func (d *Driver) tapName(id string, i int) string {
	h := sha256.Sum256([]byte(d.cfg.StateDir + "\x00" + id))
	return "vp" + hex.EncodeToString(h[:5]) + strconv.Itoa(i%1000)
}

// makeTapOn creates a persistent tap on bridge with mtu (0: the
// default), up, owned by owner ("user U group G"; nil: root only).
func (d *Driver) makeTapOn(ctx context.Context, name, bridge string, mtu int, owner []string) error {
	if linkExists(name) {
		ipCmd(ctx, "link", "del", name)
	}
	if err := ipCmd(ctx, append([]string{"tuntap", "add", "dev", name, "mode", "tap"}, owner...)...); err != nil {
		return err
	}
	args := []string{"link", "set", name, "master", bridge}
	if mtu > 0 {
		args = append(args, "mtu", strconv.Itoa(mtu))
	}
	if err := ipCmd(ctx, append(args, "up")...); err != nil {
		ipCmd(ctx, "link", "del", name)
		return err
	}
	return nil
}

// TUNSETIFF and its flags (linux/if_tun.h).
const (
	tunSetIff   = 0x400454ca
	iffTap      = 0x0002
	iffNoPI     = 0x1000
	iffVnetHdr  = 0x4000
	ifNameSize  = 16
	ifreqLength = 40
)

// openTap attaches to the persistent tap name as root and returns the
// descriptor, which QEMU inherits (netdev tap fd=): QEMU runs as the VM's
// user and may not open /dev/net/tun (0600 on some hosts).
func openTap(name string) (*os.File, error) {
	if len(name) >= ifNameSize {
		return nil, fmt.Errorf("qemu: tap name %q is too long", name)
	}
	fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("qemu: tap %s: %w", name, err)
	}
	var ifr [ifreqLength]byte
	copy(ifr[:ifNameSize], name)
	bin.NativeEndian.PutUint16(ifr[ifNameSize:], iffTap|iffNoPI|iffVnetHdr)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), tunSetIff, uintptr(unsafe.Pointer(&ifr[0]))); errno != 0 {
		syscall.Close(fd)
		return nil, fmt.Errorf("qemu: tap %s: TUNSETIFF: %w", name, errno)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}

// portOf is the host side the agent gave NIC i of cfg, or nil.
func portOf(cfg hypervisor.VMConfig, i int) *hypervisor.NICPort {
	if i < len(cfg.Ports) && cfg.Ports[i].Bridge != "" {
		p := cfg.Ports[i]
		return &p
	}
	return nil
}

// plugTap makes the tap of NIC n (index i) of VM id: on its vpool
// network's bridge with the tap name the agent chose (so the host's
// rules name it before it exists), else on the driver's bridge. A vpool
// network's bridge must exist: the agent makes it before it starts the VM.
func (d *Driver) plugTap(ctx context.Context, rec *record, i int, n *nicRec) (string, error) {
	id, owner := rec.Config.ID, d.tapOwner(rec)
	if p := n.Port; p != nil {
		if !linkExists(p.Bridge) {
			return "", fmt.Errorf("qemu: NIC %s: bridge %s of its network is missing on this host", n.Name, p.Bridge)
		}
		tap := p.Tap
		if tap == "" {
			tap = d.tapName(id, i)
		}
		return tap, d.makeTapOn(ctx, tap, p.Bridge, p.MTU, owner)
	}
	tap := d.tapName(id, i)
	return tap, d.makeTapOn(ctx, tap, d.cfg.Bridge, 0, owner)
}

// tapOwner is the "user U group G" of rec's taps: its QEMU, running as
// the VM's user, may attach to them (TUNSETIFF) and to no other.
func (d *Driver) tapOwner(rec *record) []string {
	if d.users == nil || rec.User == nil {
		return nil
	}
	return []string{"user", strconv.FormatUint(uint64(rec.User.UID), 10), "group", strconv.FormatUint(uint64(rec.User.GID), 10)}
}

// hostMTU is the MTU the guest is told through virtio-net's host_mtu for
// NIC n: its vpool network's (the tap and the bridge have it too), or 0
// (the device's default, 1500) for a NIC on the driver's own bridge.
func hostMTU(n *nicRec) int {
	if n.Port == nil {
		return 0
	}
	return n.Port.MTU
}

func (d *Driver) removeTap(name string) {
	if name == "" || !linkExists(name) {
		return
	}
	if err := ipCmd(context.Background(), "link", "del", name); err != nil {
		d.log.Warn("qemu: removing tap", "tap", name, "err", err)
	}
}

// macFor derives a stable locally administered MAC (52:54:00 is QEMU's
// prefix) from the VM id and NIC index.
func macFor(id string, i int) string {
	h := sha256.Sum256([]byte(id + "/" + strconv.Itoa(i)))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2])
}

// tapCounters returns a tap's byte counters from the guest's view: what
// the tap transmits the guest received.
func tapCounters(tap string) (rx, tx int64) {
	read := func(f string) int64 {
		b, err := os.ReadFile("/sys/class/net/" + tap + "/statistics/" + f)
		if err != nil {
			return 0
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return n
	}
	return read("tx_bytes"), read("rx_bytes")
}

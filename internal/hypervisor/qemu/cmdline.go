package qemu

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Machine is one QEMU invocation as data. Args renders it; the golden
// tests pin the rendering, so a change to the command line is a reviewed
// change to a testdata file.
type Machine struct {
	Name        string
	Accel       string // kvm | tcg
	TCGCacheMiB int64  // tb-size under TCG; 0 leaves QEMU's default
	Type        string // machine type, e.g. q35
	CPUModel    string // empty: QEMU's default
	VCPUs       int
	MaxVCPUs    int   // ≥ VCPUs; the rest are hot-pluggable slots
	MemoryMiB   int64 // boot memory
	MaxMemMiB   int64 // > MemoryMiB enables DIMM hot-add
	MemSlots    int

	Kernel, Initrd, Append string

	QMPSocket     string
	ConsoleSocket string // the serial console, also logged to SerialLog
	SerialLog     string
	PidFile       string
	// QMPFD, ConsoleFD and GuestAgentFD, when set, are inherited
	// descriptors of listening sockets the agent bound at the paths above:
	// QEMU, running as the VM's user, serves them (chardev fd=) without
	// creating a file (vmuser.go).
	QMPFD, ConsoleFD, GuestAgentFD int
	// GuestAgentSocket, when set, gives the guest a virtio-serial port
	// named org.qemu.guest_agent.0 whose host end is this unix socket
	// (qga.go).
	GuestAgentSocket string

	Secrets []Secret
	// HotplugPorts are pcie-root-port ids: the non-boot disks sit on
	// them, and free ones take hot-plugged disks (q35's root bus cannot).
	HotplugPorts []string
	Drives       []Drive
	NICs         []NICDev
	Balloon      bool
	// Watchdog, when set, adds an i6300esb watchdog (id watchdog0) and is
	// what QEMU does when it fires: reset, poweroff or pause.
	Watchdog string
	// Seed is a cloud-init NoCloud ISO, attached as a read-only CD-ROM.
	Seed string

	StartPaused bool   // -S: controls are applied before the guest runs
	Incoming    string // e.g. "defer" for migration and memory snapshots
	Sandbox     bool
}

// Secret is a secret object read from a file (in practice an inherited
// descriptor such as /dev/fd/3, so the key is never on disk or in argv).
type Secret struct {
	ID   string
	File string
}

// Drive is a virtio-blk disk over a chain of block nodes.
type Drive struct {
	DeviceID  string  // QOM id, e.g. vd0 (/machine/peripheral/vd0)
	Serial    string  // guest-visible serial (≤ 20 chars)
	Layers    []Layer // bottom first; the last one is the active layer
	BootIndex int     // 0: not bootable; otherwise bootindex=BootIndex-1
	Bus       string  // a hot-plug port id; empty: the root bus
	NoDevice  bool    // block nodes only (for block jobs on a stopped VM)
}

// Layer is one image of a drive's backing chain.
type Layer struct {
	Node     string // format node name; the file node is "f" + Node
	File     string
	Format   string // qcow2 | raw
	ReadOnly bool
	Secret   string // LUKS key secret id (qcow2 encrypt.format=luks)
}

// NICDev is a virtio-net NIC on a tap or on user-mode networking.
type NICDev struct {
	ID  string // device id; the netdev is "n" + ID
	Tap string // empty: user-mode networking
	// TapFD, when set, is the tap opened by the agent and inherited
	// (QEMU, as the VM's user, may not open /dev/net/tun itself).
	TapFD int
	MAC   string
	// MTU, when set, is offered to the guest as virtio-net's host_mtu
	// (VIRTIO_NET_F_MTU): the guest's driver takes it as the interface's
	// MTU at probe, so a jumbo-frame network needs no DHCP option or
	// cloud-init to reach the guest.
	MTU int
}

// The command line is built so that no value can add an option. Devices,
// block nodes, netdevs and objects are JSON (QEMU accepts JSON for
// -device, -blockdev, -netdev and -object; checked on 10.0): a value is a
// JSON string whatever it holds. The options QEMU parses only as
// key=value lists (-name, -machine, -accel, -chardev, -mon, ...) go
// through opts, which doubles every comma in a value (QEMU's escape), so
// a value never ends its key. The options QEMU takes whole (-kernel,
// -initrd, -append, -pidfile, -incoming) are single argv items. Check
// refuses what neither can carry: NUL bytes (execve cannot pass them) and
// a CPU model that is not a plain name (-cpu is split at commas).

// kv is one key=value of an option.
type kv struct{ k, v string }

// opts renders a key=value option: implied (when not empty) is the
// leading bare value QEMU gives an implied key (the chardev backend, the
// accelerator); every value has its commas doubled.
func opts(implied string, kvs ...kv) string {
	var b strings.Builder
	b.WriteString(escape(implied))
	for _, p := range kvs {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(escape(p.v))
	}
	return b.String()
}

// parseOpts reverses opts: the implied value (an item without '=' in the
// first place) and the pairs, with doubled commas undone.
func parseOpts(s string) (implied string, kvs []kv) {
	var items []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == ',' && i+1 < len(s) && s[i+1] == ',':
			cur.WriteByte(',')
			i++
		case s[i] == ',':
			items = append(items, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	items = append(items, cur.String())
	for i, it := range items {
		k, v, ok := strings.Cut(it, "=")
		if !ok && i == 0 {
			implied = it
			continue
		}
		kvs = append(kvs, kv{k, v})
	}
	return implied, kvs
}

// Check refuses a machine whose values cannot be passed safely.
func (m Machine) Check() error {
	if m.CPUModel != "" && !cpuModelRe.MatchString(m.CPUModel) {
		return fmt.Errorf("qemu: CPU model %q is not a plain model name", m.CPUModel)
	}
	for _, a := range m.Args() {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("qemu: a value of the command line holds a NUL byte")
		}
	}
	return nil
}

var cpuModelRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Args renders the command line (without the binary).
func (m Machine) Args() []string {
	var a []string
	add := func(s ...string) { a = append(a, s...) }
	add("-name", opts("", kv{"guest", m.Name}, kv{"debug-threads", "on"}))
	add("-machine", opts("", kv{"type", m.Type}))
	if m.Accel == "tcg" && m.TCGCacheMiB > 0 {
		add("-accel", opts(m.Accel, kv{"tb-size", strconv.FormatInt(m.TCGCacheMiB, 10)}))
	} else {
		add("-accel", opts(m.Accel))
	}
	if m.CPUModel != "" {
		add("-cpu", m.CPUModel) // a plain name (Check)
	}
	maxc := strconv.Itoa(max(m.MaxVCPUs, m.VCPUs))
	add("-smp", opts("", kv{"cpus", strconv.Itoa(m.VCPUs)}, kv{"maxcpus", maxc}, kv{"sockets", maxc}, kv{"cores", "1"}, kv{"threads", "1"}))
	mem := []kv{{"size", strconv.FormatInt(m.MemoryMiB, 10) + "M"}}
	if m.MaxMemMiB > m.MemoryMiB && m.MemSlots > 0 {
		mem = append(mem, kv{"slots", strconv.Itoa(m.MemSlots)}, kv{"maxmem", strconv.FormatInt(m.MaxMemMiB, 10) + "M"})
	}
	add("-m", opts("", mem...))
	add("-nodefaults", "-no-user-config", "-display", "none")
	add("-chardev", opts("socket", kv{"id", "qmp"}, sockAddr(m.QMPSocket, m.QMPFD), kv{"server", "on"}, kv{"wait", "off"}))
	add("-mon", opts("", kv{"chardev", "qmp"}, kv{"mode", "control"}))
	add("-chardev", opts("socket", kv{"id", "console"}, sockAddr(m.ConsoleSocket, m.ConsoleFD), kv{"server", "on"}, kv{"wait", "off"},
		kv{"logfile", m.SerialLog}, kv{"logappend", "on"}))
	add("-serial", "chardev:console")
	add("-pidfile", m.PidFile)
	if m.Kernel != "" {
		add("-kernel", m.Kernel)
		if m.Initrd != "" {
			add("-initrd", m.Initrd)
		}
		if m.Append != "" {
			add("-append", m.Append)
		}
	}
	for _, s := range m.Secrets {
		add("-object", mustJSON(map[string]any{"qom-type": "secret", "id": s.ID, "file": s.File, "format": "raw"}))
	}
	if len(m.HotplugPorts) > 0 {
		// Native PCIe hot-plug: with QEMU 7.2's default ACPI PCI hot-plug,
		// the Debian guest never ejects a disk once a vCPU was hot-added.
		add("-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off")
	}
	for i, p := range m.HotplugPorts {
		add("-device", mustJSON(map[string]any{"driver": "pcie-root-port", "id": p, "chassis": i + 1}))
	}
	a = append(a, m.driveArgs()...)
	if m.Seed != "" {
		seed := Layer{Node: "seed", File: m.Seed, Format: "raw", ReadOnly: true}
		add("-blockdev", seed.fileJSON(), "-blockdev", seed.formatJSON("", true),
			"-device", mustJSON(map[string]any{"driver": "ide-cd", "id": "cidata", "drive": "seed"}))
	}
	a = append(a, m.nicArgs()...)
	if m.Balloon {
		add("-device", mustJSON(map[string]any{"driver": "virtio-balloon-pci", "id": "balloon0"}))
	}
	if m.GuestAgentSocket != "" {
		add("-chardev", opts("socket", kv{"id", "qga"}, sockAddr(m.GuestAgentSocket, m.GuestAgentFD), kv{"server", "on"}, kv{"wait", "off"}))
		add("-device", mustJSON(map[string]any{"driver": "virtio-serial-pci", "id": "vser0"}))
		add("-device", mustJSON(map[string]any{"driver": "virtserialport", "id": "qga0", "bus": "vser0.0", "chardev": "qga", "name": guestAgentPort}))
	}
	if m.Watchdog != "" {
		add("-device", mustJSON(map[string]any{"driver": "i6300esb", "id": "watchdog0"}))
		add("-action", opts("", kv{"watchdog", m.Watchdog}))
	}
	if m.StartPaused {
		add("-S")
	}
	if m.Incoming != "" {
		add("-incoming", m.Incoming)
	}
	if m.Sandbox {
		add("-sandbox", opts("on", kv{"obsolete", "deny"}, kv{"elevateprivileges", "deny"}, kv{"spawn", "deny"}, kv{"resourcecontrol", "deny"}))
	}
	return a
}

// sockAddr is a server chardev's socket: the inherited descriptor fd
// when set, else path.
func sockAddr(path string, fd int) kv {
	if fd > 0 {
		return kv{"fd", strconv.Itoa(fd)}
	}
	return kv{"path", path}
}

func (m Machine) driveArgs() []string {
	var a []string
	add := func(s ...string) { a = append(a, s...) }
	for _, d := range m.Drives {
		for i, l := range d.Layers {
			add("-blockdev", l.fileJSON())
			var below string
			if i > 0 {
				below = d.Layers[i-1].Node
			}
			add("-blockdev", l.formatJSON(below, i == 0))
		}
		if d.NoDevice {
			continue
		}
		add("-device", mustJSON(d.deviceArgs()))
	}
	return a
}

// deviceArgs is the drive's virtio-blk device, for -device and device_add.
func (d Drive) deviceArgs() map[string]any {
	dev := map[string]any{"driver": "virtio-blk-pci", "id": d.DeviceID, "drive": d.Layers[len(d.Layers)-1].Node}
	if d.Bus != "" {
		dev["bus"] = d.Bus
	}
	if d.Serial != "" {
		dev["serial"] = d.Serial
	}
	if d.BootIndex > 0 {
		dev["bootindex"] = d.BootIndex - 1
	}
	return dev
}

func (m Machine) nicArgs() []string {
	var a []string
	add := func(s ...string) { a = append(a, s...) }
	for _, n := range m.NICs {
		netdev := map[string]any{"type": "user", "id": "n" + n.ID}
		switch {
		case n.TapFD > 0:
			netdev = map[string]any{"type": "tap", "id": "n" + n.ID, "fd": strconv.Itoa(n.TapFD)}
		case n.Tap != "":
			netdev = map[string]any{"type": "tap", "id": "n" + n.ID, "ifname": n.Tap, "script": "no", "downscript": "no"}
		}
		add("-netdev", mustJSON(netdev))
		dev := map[string]any{"driver": "virtio-net-pci", "id": n.ID, "netdev": "n" + n.ID}
		if n.MAC != "" {
			dev["mac"] = n.MAC
		}
		if n.MTU > 0 {
			dev["host_mtu"] = n.MTU
		}
		add("-device", mustJSON(dev))
	}
	return a
}

func (l Layer) fileJSON() string {
	return mustJSON(map[string]any{
		"driver":    "file",
		"node-name": "f" + l.Node,
		"filename":  l.File,
		"read-only": l.ReadOnly,
	})
}

// formatJSON renders the format node; below names the backing node. The
// bottom layer gets an explicit "backing": null so QEMU never opens a
// backing file from an image header behind our back.
func (l Layer) formatJSON(below string, bottom bool) string {
	o := map[string]any{
		"driver":    l.Format,
		"node-name": l.Node,
		"file":      "f" + l.Node,
		"read-only": l.ReadOnly,
	}
	if l.Format == "qcow2" {
		if below != "" {
			o["backing"] = below
		} else if bottom {
			o["backing"] = nil
		}
		if l.Secret != "" {
			o["encrypt"] = map[string]any{"format": "luks", "key-secret": l.Secret}
		}
	}
	return mustJSON(o)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("qemu: rendering %T: %v", v, err)) // maps of strings, numbers, bools and nil: cannot fail
	}
	return string(b)
}

// escape doubles commas, QEMU's escape inside option values.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

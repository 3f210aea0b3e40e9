package qemu

import (
	"encoding/json"
	"fmt"
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

	Secrets []Secret
	// HotplugPorts are pcie-root-port ids: the non-boot disks sit on
	// them, and free ones take hot-plugged disks (q35's root bus cannot).
	HotplugPorts []string
	Drives       []Drive
	NICs         []NICDev
	Balloon      bool
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
	MAC string
}

// Args renders the command line (without the binary).
func (m Machine) Args() []string {
	var a []string
	add := func(s ...string) { a = append(a, s...) }
	add("-name", "guest="+escape(m.Name)+",debug-threads=on")
	add("-machine", "type="+m.Type)
	if m.Accel == "tcg" && m.TCGCacheMiB > 0 {
		add("-accel", "tcg,tb-size="+strconv.FormatInt(m.TCGCacheMiB, 10))
	} else {
		add("-accel", m.Accel)
	}
	if m.CPUModel != "" {
		add("-cpu", m.CPUModel)
	}
	maxc := max(m.MaxVCPUs, m.VCPUs)
	add("-smp", fmt.Sprintf("cpus=%d,maxcpus=%d,sockets=%d,cores=1,threads=1", m.VCPUs, maxc, maxc))
	mem := fmt.Sprintf("size=%dM", m.MemoryMiB)
	if m.MaxMemMiB > m.MemoryMiB && m.MemSlots > 0 {
		mem += fmt.Sprintf(",slots=%d,maxmem=%dM", m.MemSlots, m.MaxMemMiB)
	}
	add("-m", mem)
	add("-nodefaults", "-no-user-config", "-display", "none")
	add("-chardev", "socket,id=qmp,path="+escape(m.QMPSocket)+",server=on,wait=off")
	add("-mon", "chardev=qmp,mode=control")
	add("-chardev", "socket,id=console,path="+escape(m.ConsoleSocket)+",server=on,wait=off,logfile="+escape(m.SerialLog)+",logappend=on")
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
		add("-object", "secret,id="+s.ID+",file="+escape(s.File)+",format=raw")
	}
	if len(m.HotplugPorts) > 0 {
		// Native PCIe hot-plug: with QEMU 7.2's default ACPI PCI hot-plug,
		// the Debian guest never ejects a disk once a vCPU was hot-added.
		add("-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off")
	}
	for i, p := range m.HotplugPorts {
		add("-device", fmt.Sprintf("pcie-root-port,id=%s,chassis=%d", p, i+1))
	}
	a = append(a, m.driveArgs()...)
	if m.Seed != "" {
		seed := Layer{Node: "seed", File: m.Seed, Format: "raw", ReadOnly: true}
		add("-blockdev", seed.fileJSON(), "-blockdev", seed.formatJSON("", true), "-device", "ide-cd,id=cidata,drive=seed")
	}
	a = append(a, m.nicArgs()...)
	if m.Balloon {
		add("-device", "virtio-balloon-pci,id=balloon0")
	}
	if m.StartPaused {
		add("-S")
	}
	if m.Incoming != "" {
		add("-incoming", m.Incoming)
	}
	if m.Sandbox {
		add("-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
	}
	return a
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
		dev := "virtio-blk-pci,id=" + d.DeviceID + ",drive=" + d.Layers[len(d.Layers)-1].Node
		if d.Bus != "" {
			dev += ",bus=" + d.Bus
		}
		if d.Serial != "" {
			dev += ",serial=" + escape(d.Serial)
		}
		if d.BootIndex > 0 {
			dev += ",bootindex=" + strconv.Itoa(d.BootIndex-1)
		}
		add("-device", dev)
	}
	return a
}

func (m Machine) nicArgs() []string {
	var a []string
	add := func(s ...string) { a = append(a, s...) }
	for _, n := range m.NICs {
		if n.Tap != "" {
			add("-netdev", "tap,id=n"+n.ID+",ifname="+n.Tap+",script=no,downscript=no")
		} else {
			add("-netdev", "user,id=n"+n.ID)
		}
		dev := "virtio-net-pci,id=" + n.ID + ",netdev=n" + n.ID
		if n.MAC != "" {
			dev += ",mac=" + n.MAC
		}
		add("-device", dev)
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
		panic(fmt.Sprintf("qemu: rendering %T: %v", v, err)) // only maps of strings/bools: cannot fail
	}
	return string(b)
}

// escape doubles commas, QEMU's escape inside option values.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

package qemu

import (
	"bytes"
	bin "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/vpool/vpool/internal/hypervisor"
)

// The cloud-init NoCloud seed: an ISO 9660 image labelled "cidata" with
// meta-data (instance id, host name, SSH keys as public-keys) and
// user-data, attached as a CD-ROM. Written here in pure Go (a root
// directory of a few small files is all NoCloud needs), with a Joliet
// tree so that the guest sees the lower-case names "meta-data" and
// "user-data".

const sectorSize = 2048

// seedFiles returns the NoCloud files of cfg.
func seedFiles(cfg hypervisor.VMConfig) map[string][]byte {
	ci := cfg.Spec.CloudInit
	host := ci.Hostname
	if host == "" {
		host = cfg.Name
	}
	id := cfg.UID
	if id == "" {
		id = cfg.ID
	}
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) } // JSON strings are YAML scalars
	var md strings.Builder
	fmt.Fprintf(&md, "instance-id: %s\nlocal-hostname: %s\n", q(id), q(host))
	if len(ci.SSHKeys) > 0 {
		md.WriteString("public-keys:\n")
		for _, k := range ci.SSHKeys {
			fmt.Fprintf(&md, "  - %s\n", q(strings.TrimSpace(k)))
		}
	}
	ud := ci.UserData
	if ud == "" {
		ud = "#cloud-config\n{}\n"
	}
	files := map[string][]byte{"meta-data": []byte(md.String()), "user-data": []byte(ud)}
	if nc := networkConfig(cfg); nc != nil {
		files["network-config"] = nc
	}
	return files
}

// isoFile is one file of the root directory.
type isoFile struct {
	name   string // Joliet name, e.g. "user-data"
	data   []byte
	extent uint32
}

// buildISO returns an ISO 9660 image with a Joliet tree, volume label
// label, holding files in its root directory. at stamps every date, so
// the same input gives the same bytes.
func buildISO(label string, files map[string][]byte, at time.Time) []byte {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	const (
		pvdSector, svdSector, termSector = 16, 17, 18
		lPath, mPath, jlPath, jmPath     = 19, 20, 21, 22
		rootSector, jrootSector          = 23, 24
		firstData                        = 25
	)
	fs := make([]isoFile, len(names))
	next := uint32(firstData)
	for i, n := range names {
		fs[i] = isoFile{name: n, data: files[n], extent: next}
		next += uint32((len(files[n]) + sectorSize - 1) / sectorSize)
	}
	total := next
	img := make([]byte, int(total)*sectorSize)
	sector := func(n int) []byte { return img[n*sectorSize : (n+1)*sectorSize] }

	root := dirSector(fs, rootSector, at, false)
	jroot := dirSector(fs, jrootSector, at, true)
	copy(sector(rootSector), root)
	copy(sector(jrootSector), jroot)
	for _, f := range fs {
		copy(img[int(f.extent)*sectorSize:], f.data)
	}
	writePathTable(sector(lPath), rootSector, bin.LittleEndian)
	writePathTable(sector(mPath), rootSector, bin.BigEndian)
	writePathTable(sector(jlPath), jrootSector, bin.LittleEndian)
	writePathTable(sector(jmPath), jrootSector, bin.BigEndian)
	writeVD(sector(pvdSector), 1, label, total, lPath, mPath, dirRecord(rootSector, sectorSize, true, []byte{0}, at), at)
	writeVD(sector(svdSector), 2, label, total, jlPath, jmPath, dirRecord(jrootSector, sectorSize, true, []byte{0}, at), at)
	t := sector(termSector)
	t[0] = 255
	copy(t[1:6], "CD001")
	t[6] = 1
	return img
}

// dirSector renders a root directory: ".", "..", then the files.
func dirSector(fs []isoFile, self uint32, at time.Time, joliet bool) []byte {
	var b bytes.Buffer
	b.Write(dirRecord(self, sectorSize, true, []byte{0}, at))
	b.Write(dirRecord(self, sectorSize, true, []byte{1}, at))
	for _, f := range fs {
		var id []byte
		if joliet {
			for _, u := range utf16.Encode([]rune(f.name)) {
				id = append(id, byte(u>>8), byte(u))
			}
		} else {
			id = []byte(isoName(f.name) + ";1")
		}
		b.Write(dirRecord(f.extent, uint32(len(f.data)), false, id, at))
	}
	return b.Bytes()
}

// isoName maps a name to ISO 9660 d-characters (upper case, digits, _),
// 8.3: the tree that guests without Joliet see.
func isoName(n string) string {
	base, ext, _ := strings.Cut(n, ".")
	clean := func(s string, max int) string {
		var o strings.Builder
		for _, r := range strings.ToUpper(s) {
			if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
				o.WriteRune(r)
			} else {
				o.WriteByte('_')
			}
		}
		return truncate(o.String(), max)
	}
	return clean(base, 8) + "." + clean(ext, 3)
}

func dirRecord(extent, size uint32, dir bool, id []byte, at time.Time) []byte {
	n := 33 + len(id)
	if n%2 == 1 {
		n++
	}
	r := make([]byte, n)
	r[0] = byte(n)
	both32(r[2:], extent)
	both32(r[10:], size)
	at = at.UTC()
	r[18], r[19], r[20] = byte(at.Year()-1900), byte(at.Month()), byte(at.Day())
	r[21], r[22], r[23] = byte(at.Hour()), byte(at.Minute()), byte(at.Second())
	if dir {
		r[25] = 2
	}
	both16(r[28:], 1)
	r[32] = byte(len(id))
	copy(r[33:], id)
	return r
}

func writePathTable(b []byte, root uint32, order bin.ByteOrder) {
	b[0] = 1 // identifier length
	order.PutUint32(b[2:], root)
	order.PutUint16(b[6:], 1) // parent: itself
}

// writeVD writes a primary (typ 1) or Joliet supplementary (typ 2)
// volume descriptor.
func writeVD(b []byte, typ byte, label string, total uint32, lPath, mPath int, root []byte, at time.Time) {
	b[0] = typ
	copy(b[1:6], "CD001")
	b[6] = 1
	str := func(off, n int, s string) {
		if typ == 2 {
			var u []byte
			for _, c := range utf16.Encode([]rune(s)) {
				u = append(u, byte(c>>8), byte(c))
			}
			for i := len(u); i+1 < n; i += 2 {
				u = append(u, 0, ' ')
			}
			copy(b[off:off+n], u)
			return
		}
		copy(b[off:off+n], s+strings.Repeat(" ", n-len(s)))
	}
	str(8, 32, "LINUX")
	str(40, 32, label)
	both32(b[80:], total)
	if typ == 2 {
		copy(b[88:], "%/E") // UCS-2 level 3
	}
	both16(b[120:], 1)
	both16(b[124:], 1)
	both16(b[128:], sectorSize)
	both32(b[132:], 10)
	bin.LittleEndian.PutUint32(b[140:], uint32(lPath))
	bin.BigEndian.PutUint32(b[148:], uint32(mPath))
	copy(b[156:190], root)
	for _, f := range [][2]int{{190, 128}, {318, 128}, {446, 128}, {574, 128}, {702, 37}, {739, 37}, {776, 37}} {
		str(f[0], f[1], "")
	}
	stamp := at.UTC().Format("20060102150405") + "00"
	copy(b[813:], stamp)
	copy(b[830:], stamp)
	copy(b[847:], "0000000000000000")
	copy(b[864:], "0000000000000000")
	b[881] = 1
}

func both32(b []byte, v uint32) {
	bin.LittleEndian.PutUint32(b, v)
	bin.BigEndian.PutUint32(b[4:], v)
}

func both16(b []byte, v uint16) {
	bin.LittleEndian.PutUint16(b, v)
	bin.BigEndian.PutUint16(b[2:], v)
}

// errSealedSeed: a VM's user data reached the driver sealed.
var errSealedSeed = errors.New("its cloud-init user data is still sealed (the server did not open it for this host): no seed is written without it")

// seedLabel is the volume label cloud-init's NoCloud looks for.
const seedLabel = "cidata"

// writeSeed writes the VM's NoCloud seed into its directory and returns
// its path ("" when the VM has no CloudInit).
func (d *Driver) writeSeed(rec *record) (string, error) {
	ci := rec.Config.Spec.CloudInit
	if ci == nil {
		return "", nil
	}
	if ci.UserDataSealed != nil {
		// the server opens user data for the VM's host; a guest booted
		// from a seed without it would lack its users, keys or set-up
		return "", fmt.Errorf("qemu: VM %s: %w", rec.Config.ID, errSealedSeed)
	}
	path := d.vmDir(rec.Config.ID) + "/seed.iso"
	img := buildISO(seedLabel, seedFiles(rec.Config), rec.CreatedAt)
	if err := writeFileAtomic(path, img, 0o600); err != nil {
		return "", err
	}
	return path, nil
}

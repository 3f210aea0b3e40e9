package api

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/vpool/vpool/internal/model"
)

// HeartbeatCompactType is the Content-Type of a heartbeat in its compact
// form (version 1): the usage of each VM in binary instead of JSON, which
// a server decodes several times faster than the JSON body. A server that
// accepts it lists it in HeartbeatResponse.Accepts; an agent sends it
// only to a server that said so (and falls back to JSON on a 400 or 415,
// e.g. from an older server it moved to). JSON stays valid for every
// agent.
//
// Layout: the magic "VHB1"; a uvarint length and that many bytes of the
// heartbeat's JSON without its VMs; a uvarint count of VMs; per VM the
// strings project, name, uid and phase (each a uvarint length and the
// bytes), then its usage: CPUPercent as the 8 bytes of its float64 bits
// (little endian), CPUTimeNs, Memory, DiskRead, DiskWrite, NetRx, NetTx
// as varints. Nothing may follow.
const HeartbeatCompactType = "application/vnd.vpool.heartbeat.v1"

const heartbeatMagic = "VHB1"

// minCompactVM is the fewest bytes a VM takes in the compact form (four
// empty strings, the float, six one-byte varints): a count is checked
// against it before anything is allocated.
const minCompactVM = 4 + 8 + 6

// ErrCompactHeartbeat says a compact heartbeat is malformed.
var ErrCompactHeartbeat = errors.New("api: malformed compact heartbeat")

// compactable says whether r carries only what the compact form holds.
func compactable(r *VMReport) bool {
	return r.Error == "" && r.Message == "" && r.AppliedRestartNonce == 0 && !r.Gone && r.Resize == nil && r.Disks == nil
}

// EncodeHeartbeatCompact returns hb in the compact form; false when a VM
// report carries more than the form holds (errors, resizes, disks): send
// JSON then.
func EncodeHeartbeatCompact(hb *Heartbeat) ([]byte, bool) {
	for i := range hb.VMs {
		if !compactable(&hb.VMs[i]) {
			return nil, false
		}
	}
	head := *hb
	head.VMs = nil
	hj, err := json.Marshal(&head)
	if err != nil {
		return nil, false
	}
	b := make([]byte, 0, len(heartbeatMagic)+len(hj)+16+len(hb.VMs)*64)
	b = append(b, heartbeatMagic...)
	b = binary.AppendUvarint(b, uint64(len(hj)))
	b = append(b, hj...)
	b = binary.AppendUvarint(b, uint64(len(hb.VMs)))
	for i := range hb.VMs {
		r := &hb.VMs[i]
		for _, s := range []string{r.Project, r.Name, r.UID, string(r.Phase)} {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
		u := &r.Usage
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(u.CPUPercent))
		for _, v := range []int64{u.CPUTimeNs, int64(u.Memory), u.DiskRead, u.DiskWrite, u.NetRx, u.NetTx} {
			b = binary.AppendVarint(b, v)
		}
	}
	return b, true
}

// DecodeHeartbeatCompact decodes the compact form. The JSON part is
// decoded as strictly as a JSON heartbeat (unknown fields refused).
func DecodeHeartbeatCompact(b []byte) (Heartbeat, error) {
	var hb Heartbeat
	d := compactReader{b: b, s: string(b)}
	if magic := d.bytes(len(heartbeatMagic)); string(magic) != heartbeatMagic {
		return hb, fmt.Errorf("%w: it does not start with %q", ErrCompactHeartbeat, heartbeatMagic)
	}
	hj := d.bytes(d.length())
	if d.err != nil {
		return hb, d.err
	}
	dec := json.NewDecoder(bytes.NewReader(hj))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hb); err != nil {
		return hb, fmt.Errorf("%w: its JSON part: %w", ErrCompactHeartbeat, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return hb, fmt.Errorf("%w: its JSON part holds more than one value", ErrCompactHeartbeat)
	}
	if hb.VMs != nil {
		return hb, fmt.Errorf("%w: VMs in its JSON part", ErrCompactHeartbeat)
	}
	n := d.length()
	if n > len(d.b)/minCompactVM {
		d.fail("VM list")
	}
	if d.err == nil && n > 0 {
		hb.VMs = make([]VMReport, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		r := &hb.VMs[i]
		r.Project, r.Name, r.UID, r.Phase = d.str(), d.str(), d.str(), model.Phase(d.str())
		u := &r.Usage
		u.CPUPercent = math.Float64frombits(binary.LittleEndian.Uint64(d.bytes(8)))
		u.CPUTimeNs, u.Memory, u.DiskRead, u.DiskWrite = d.varint(), model.Bytes(d.varint()), d.varint(), d.varint()
		u.NetRx, u.NetTx = d.varint(), d.varint()
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%w: %d bytes after the last VM", ErrCompactHeartbeat, len(d.b))
	}
	if d.err != nil {
		return Heartbeat{}, d.err
	}
	return hb, nil
}

// compactReader reads the compact form; the first error sticks and
// every later read returns zero values. s is b as one string: the
// strings read are slices of it (one allocation, not one per string).
type compactReader struct {
	b   []byte
	s   string
	err error
}

func (d *compactReader) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", ErrCompactHeartbeat, what)
	}
	d.b, d.s = nil, ""
}

var zero8 [8]byte

func (d *compactReader) bytes(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.fail("field")
		return zero8[:]
	}
	out := d.b[:n]
	d.b = d.b[n:]
	d.s = d.s[n:]
	return out
}

// length reads a uvarint that counts bytes or items still to come (so
// never more than the bytes left).
func (d *compactReader) length() int {
	v, n := binary.Uvarint(d.b)
	if d.err != nil || n <= 0 || v > uint64(len(d.b)-n) {
		d.fail("length")
		return 0
	}
	d.b, d.s = d.b[n:], d.s[n:]
	return int(v)
}

func (d *compactReader) str() string {
	n := d.length()
	if d.err != nil {
		return ""
	}
	out := d.s[:n]
	d.bytes(n)
	return out
}

func (d *compactReader) varint() int64 {
	v, n := binary.Varint(d.b)
	if d.err != nil || n <= 0 {
		d.fail("number")
		return 0
	}
	d.b, d.s = d.b[n:], d.s[n:]
	return v
}

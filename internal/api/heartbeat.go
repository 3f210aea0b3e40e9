package api

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sync"

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
// heartbeat's JSON without its VMs and usage (the host's inventory: the
// same beat after beat, so a server decodes it once per host and change,
// HeartbeatDecoder); the host's usage: CPUPercent as the 8 bytes of its
// float64 bits (little endian), MemoryUsed and DiskUsed as varints; a
// uvarint count of VMs; per VM the
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
	head.VMs, head.Usage = nil, model.HostUsage{}
	hj, err := json.Marshal(&head)
	if err != nil {
		return nil, false
	}
	b := make([]byte, 0, len(heartbeatMagic)+len(hj)+16+len(hb.VMs)*64)
	b = append(b, heartbeatMagic...)
	b = binary.AppendUvarint(b, uint64(len(hj)))
	b = append(b, hj...)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(hb.Usage.CPUPercent))
	b = binary.AppendVarint(b, int64(hb.Usage.MemoryUsed))
	b = binary.AppendVarint(b, int64(hb.Usage.DiskUsed))
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
	return (*HeartbeatDecoder)(nil).Decode(b)
}

// HeartbeatDecoder decodes compact heartbeats, keeping the decoded JSON
// part (the inventory) of each host's last beat: a beat whose JSON part
// is byte for byte the last one's is not decoded again. Safe for
// concurrent use; a nil decoder keeps nothing.
type HeartbeatDecoder struct {
	mu    sync.Mutex
	heads map[string]Heartbeat // by the JSON part's bytes
}

// maxHeads bounds the inventories a HeartbeatDecoder keeps (about one
// per host); past it the decoder starts afresh.
const maxHeads = 1 << 16

// Decode decodes the compact form b (DecodeHeartbeatCompact).
func (hd *HeartbeatDecoder) Decode(b []byte) (Heartbeat, error) {
	var hb Heartbeat
	if err := hd.decode(b, &hb, false); err != nil {
		return Heartbeat{}, err
	}
	return hb, nil
}

// DecodeShared decodes the compact form b into hb as Decode does, with
// two savings for a caller that decodes beat after beat (a server, 1,000
// a second): hb.VMs' room is reused (a beat without VMs leaves it empty,
// not nil), and the inventory's maps and slices (Labels, Pools,
// Networks, Net) are the decoder's kept ones, shared: the caller must
// not change them (hb.CloneInventory first).
func (hd *HeartbeatDecoder) DecodeShared(b []byte, hb *Heartbeat) error {
	if err := hd.decode(b, hb, true); err != nil {
		*hb = Heartbeat{VMs: hb.VMs[:0]}
		return err
	}
	return nil
}

// CloneInventory gives hb its own copies of the inventory's maps and
// slices (after DecodeShared).
func (hb *Heartbeat) CloneInventory() {
	vms := hb.VMs
	*hb = cloneHead(*hb)
	hb.VMs = vms
}

func (hd *HeartbeatDecoder) decode(b []byte, hb *Heartbeat, shared bool) error {
	d := compactReader{b: b, s: string(b)}
	if magic := d.bytes(len(heartbeatMagic)); string(magic) != heartbeatMagic {
		return fmt.Errorf("%w: it does not start with %q", ErrCompactHeartbeat, heartbeatMagic)
	}
	hj := d.bytes(d.length())
	if d.err != nil {
		return d.err
	}
	head, err := hd.head(hj, shared)
	if err != nil {
		return err
	}
	room := hb.VMs[:0]
	*hb = head
	hb.Usage.CPUPercent = math.Float64frombits(binary.LittleEndian.Uint64(d.bytes(8)))
	hb.Usage.MemoryUsed, hb.Usage.DiskUsed = model.Bytes(d.varint()), model.Bytes(d.varint())
	n := d.length()
	if n > len(d.b)/minCompactVM {
		d.fail("VM list")
	}
	if shared && d.err == nil && n == 0 {
		hb.VMs = room // empty, its room kept for the next beat's host
	}
	if d.err == nil && n > 0 {
		if cap(room) >= n {
			hb.VMs = room[:n]
		} else {
			// room for the hosts with more VMs that reuse it next: a
			// server's pooled beats serve every host in turn
			hb.VMs = make([]VMReport, n, max(n, 2*cap(room), 16))
		}
	}
	for i := 0; i < n && d.err == nil; i++ {
		r := &hb.VMs[i]
		*r = VMReport{Project: d.str(), Name: d.str(), UID: d.str()}
		r.Phase = model.Phase(d.str())
		u := &r.Usage
		u.CPUPercent = math.Float64frombits(binary.LittleEndian.Uint64(d.bytes(8)))
		u.CPUTimeNs, u.Memory, u.DiskRead, u.DiskWrite = d.varint(), model.Bytes(d.varint()), d.varint(), d.varint()
		u.NetRx, u.NetTx = d.varint(), d.varint()
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%w: %d bytes after the last VM", ErrCompactHeartbeat, len(d.b))
	}
	return d.err
}

// head decodes the JSON part, or copies the one kept for the same bytes
// (its maps and slices too: callers may keep or change what they get).
func (hd *HeartbeatDecoder) head(hj []byte, shared bool) (Heartbeat, error) {
	if hd != nil {
		hd.mu.Lock()
		h, ok := hd.heads[string(hj)]
		hd.mu.Unlock()
		if ok && shared {
			return h, nil
		}
		if ok {
			return cloneHead(h), nil
		}
	}
	var hb Heartbeat
	dec := json.NewDecoder(bytes.NewReader(hj))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&hb); err != nil {
		return hb, fmt.Errorf("%w: its JSON part: %w", ErrCompactHeartbeat, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return hb, fmt.Errorf("%w: its JSON part holds more than one value", ErrCompactHeartbeat)
	}
	if hb.VMs != nil || hb.Usage != (model.HostUsage{}) {
		return hb, fmt.Errorf("%w: VMs or usage in its JSON part", ErrCompactHeartbeat)
	}
	if hd != nil {
		hd.mu.Lock()
		if hd.heads == nil || len(hd.heads) >= maxHeads {
			hd.heads = map[string]Heartbeat{}
		}
		hd.heads[string(hj)] = hb
		hd.mu.Unlock()
		if shared {
			return hb, nil
		}
		return cloneHead(hb), nil
	}
	return hb, nil
}

// cloneHead copies a kept inventory deep enough that nothing the caller
// changes reaches the kept one.
func cloneHead(h Heartbeat) Heartbeat {
	h.Labels = maps.Clone(h.Labels)
	h.Pools = slices.Clone(h.Pools)
	h.Networks = slices.Clone(h.Networks)
	if h.Net != nil {
		n := *h.Net
		h.Net = &n
	}
	return h
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

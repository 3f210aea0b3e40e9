package model

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

// UsageSample is one server's sampled view of some of the hosts that
// heartbeat to it: what their agents last reported (host and VM usage)
// and when the server last saw each of them. Usage lives in the servers'
// memory; these records carry it into the store at a bounded rate (one
// write per shard of hosts per sample interval), so that the leader's
// decisions and a new leader after a failover have it without every
// heartbeat writing etcd (docs/scale.md).
type UsageSample struct {
	// Server is the agent listener address of the server that wrote it.
	Server string       `json:"server"`
	At     time.Time    `json:"at"`
	Hosts  []HostSample `json:"hosts"`
}

// HostSample is one host in a UsageSample.
type HostSample struct {
	Host string `json:"host"`
	// Seen is when the server last renewed the host's liveness lease (the
	// last heartbeat it answered); the lease expires LeaseTTL seconds
	// after it unless renewed since.
	Seen     time.Time  `json:"seen"`
	LeaseTTL int        `json:"leaseTTL,omitempty"`
	Usage    HostUsage  `json:"usage"`
	VMs      []VMSample `json:"vms,omitempty"`
}

// VMSample is one VM's usage in a HostSample, written as a JSON array
// ["project/name", cpuPercent, memory, cpuTimeNs, diskRead, diskWrite,
// netRx, netTx] to keep samples of 100,000 VMs small.
type VMSample struct {
	Key   string
	Usage VMUsage
}

// MarshalJSON implements json.Marshaler. It writes what
// json.Marshal([]any{...}) wrote, without reflection: a server writes
// every VM's sample every 30 s (docs/scale.md, eighth round).
func (s VMSample) MarshalJSON() ([]byte, error) {
	return s.appendJSON(make([]byte, 0, 96))
}

func (s VMSample) appendJSON(b []byte) ([]byte, error) {
	u := s.Usage
	cpu := math.Round(u.CPUPercent*10) / 10
	if math.IsNaN(cpu) || math.IsInf(cpu, 0) {
		return nil, fmt.Errorf("model: a VM sample's CPU is %v", u.CPUPercent)
	}
	b = append(b, '[')
	if plainJSONString(s.Key) {
		b = append(append(append(b, '"'), s.Key...), '"')
	} else {
		k, err := json.Marshal(s.Key)
		if err != nil {
			return nil, err
		}
		b = append(b, k...)
	}
	b = append(b, ',')
	b = appendJSONFloat(b, cpu)
	for _, v := range [...]int64{int64(u.Memory), u.CPUTimeNs, u.DiskRead, u.DiskWrite, u.NetRx, u.NetTx} {
		b = strconv.AppendInt(append(b, ','), v, 10)
	}
	return append(b, ']'), nil
}

// plainJSONString says whether s is written in JSON as it is between
// quotes (json.Marshal escapes quotes, backslashes, control characters,
// <, > and &, and checks non-ASCII text).
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// appendJSONFloat writes f as encoding/json does.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if n := len(b); format == 'e' && n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
		b[n-2] = b[n-1] // e-09 → e-9
		b = b[:n-1]
	}
	return b
}

// UnmarshalJSON implements json.Unmarshaler. The array a server wrote
// (a plain key, eight numbers) is read directly: every server decodes
// every server's samples, 100,000 VMs every 30 s at 10,000 hosts, where
// decoding each field through encoding/json was 4 % of a server's CPU at
// rest (docs/scale.md, eighth round). Anything else (escapes, nulls,
// errors) takes encoding/json's way, with its answers.
func (s *VMSample) UnmarshalJSON(b []byte) error {
	if s.fastUnmarshal(b) {
		return nil
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	if len(raw) != 8 {
		return fmt.Errorf("model: a VM sample has 8 fields, got %d", len(raw))
	}
	var mem int64
	dst := []any{&s.Key, &s.Usage.CPUPercent, &mem, &s.Usage.CPUTimeNs, &s.Usage.DiskRead, &s.Usage.DiskWrite,
		&s.Usage.NetRx, &s.Usage.NetTx}
	for i, d := range dst {
		if err := json.Unmarshal(raw[i], d); err != nil {
			return fmt.Errorf("model: VM sample field %d: %w", i, err)
		}
	}
	s.Usage.Memory = Bytes(mem)
	return nil
}

// fastUnmarshal reads b, valid JSON (encoding/json checks it before it
// calls UnmarshalJSON), when it is an array of a string without escapes
// and seven numbers, the last six integers; false (s untouched) else.
func (s *VMSample) fastUnmarshal(b []byte) bool {
	r := sampleReader{b: b}
	if !r.byte('[') {
		return false
	}
	key, ok := r.plainString()
	if !ok || !r.byte(',') {
		return false
	}
	cpu, err := strconv.ParseFloat(string(r.number()), 64) // not kept: no copy
	if err != nil {
		return false
	}
	var n [6]int64
	for i := range n {
		if !r.byte(',') {
			return false
		}
		if n[i], ok = parseJSONInt(r.number()); !ok {
			return false
		}
	}
	if !r.byte(']') || r.skipSpace() != len(b) {
		return false
	}
	s.Key = key
	s.Usage = VMUsage{CPUPercent: cpu, Memory: Bytes(n[0]), CPUTimeNs: n[1], DiskRead: n[2], DiskWrite: n[3], NetRx: n[4], NetTx: n[5]}
	return true
}

// sampleReader reads the tokens of a VM sample's array.
type sampleReader struct {
	b []byte
	i int
}

func (r *sampleReader) skipSpace() int {
	for r.i < len(r.b) && (r.b[r.i] == ' ' || r.b[r.i] == '\t' || r.b[r.i] == '\n' || r.b[r.i] == '\r') {
		r.i++
	}
	return r.i
}

func (r *sampleReader) byte(c byte) bool {
	if r.skipSpace() < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

func (r *sampleReader) plainString() (string, bool) {
	if !r.byte('"') {
		return "", false
	}
	start := r.i
	for r.i < len(r.b) {
		switch c := r.b[r.i]; {
		case c == '"':
			r.i++
			return string(r.b[start : r.i-1]), true
		case c == '\\' || c >= 0x80:
			return "", false
		}
		r.i++
	}
	return "", false
}

// number returns the number token at r (empty when there is none).
func (r *sampleReader) number() []byte {
	start := r.skipSpace()
	for r.i < len(r.b) && isNumberByte(r.b[r.i]) {
		r.i++
	}
	return r.b[start:r.i]
}

// parseJSONInt reads a JSON integer (-?[0-9]+) that fits an int64, as
// strconv.ParseInt does; false for anything else (a fraction, an
// exponent, an overflow: encoding/json refuses those for an int64).
func parseJSONInt(b []byte) (int64, bool) {
	neg := len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var u uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		u = u*10 + uint64(c-'0')
	}
	switch {
	case neg && u <= 1<<63:
		return -int64(u), true
	case !neg && u < 1<<63:
		return int64(u), true
	}
	return 0, false
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// AliveRecord is the value of a host's liveness key, which is attached to
// the host's lease (the key vanishes when the lease expires): which
// server attached it and the lease's TTL in seconds. Any server that
// receives the host's heartbeats renews that same lease.
type AliveRecord struct {
	Server   string `json:"server"`
	LeaseTTL int    `json:"leaseTTL"`
}

package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/vpool/vpool/internal/model"
)

func sampleBeat(vms int) Heartbeat {
	hb := Heartbeat{Host: "h1", Labels: map[string]string{"zone": "a"}, Capacity: model.Resources{CPUs: 64, Memory: 256 * model.GiB},
		Driver: "fleet", Accel: "sim", Version: "v1", Usage: model.HostUsage{CPUPercent: 12.5, MemoryUsed: 3 * model.GiB}}
	for i := range vms {
		hb.VMs = append(hb.VMs, VMReport{Project: "p", Name: "vm-" + string(rune('a'+i%26)), UID: "uid", Phase: model.PhaseRunning,
			Usage: model.VMUsage{CPUPercent: 33.3 + float64(i), CPUTimeNs: 1 << 40, Memory: model.GiB, DiskRead: -1, NetTx: int64(i)}})
	}
	return hb
}

// TestCompactHeartbeatRoundTrip: the compact form decodes to what JSON
// gives; reports it cannot hold are refused (sent as JSON instead).
func TestCompactHeartbeatRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 40} {
		hb := sampleBeat(n)
		b, ok := EncodeHeartbeatCompact(&hb)
		if !ok {
			t.Fatalf("%d VMs: not compactable", n)
		}
		got, err := DecodeHeartbeatCompact(b)
		if err != nil {
			t.Fatalf("%d VMs: %v", n, err)
		}
		var want Heartbeat
		j, _ := json.Marshal(hb)
		if err := json.Unmarshal(j, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%d VMs: compact gives %+v, JSON %+v", n, got, want)
		}
	}
	hb := sampleBeat(2)
	hb.VMs[1].Error = "boom"
	if _, ok := EncodeHeartbeatCompact(&hb); ok {
		t.Fatal("a report with an error was put in the compact form, which would drop the error")
	}
}

// TestCompactHeartbeatRefusesMalformed: every truncation, trailing bytes,
// a wrong magic, unknown JSON fields and huge counts are errors, never
// panics or big allocations.
func TestCompactHeartbeatRefusesMalformed(t *testing.T) {
	hb := sampleBeat(3)
	b, _ := EncodeHeartbeatCompact(&hb)
	for i := range len(b) {
		if _, err := DecodeHeartbeatCompact(b[:i]); !errors.Is(err, ErrCompactHeartbeat) {
			t.Fatalf("truncated to %d of %d bytes: %v", i, len(b), err)
		}
	}
	bad := map[string][]byte{
		"trailing":      append(append([]byte{}, b...), 0),
		"magic":         append([]byte("VHB2"), b[4:]...),
		"unknown field": append([]byte("VHB1\x0c{\"bogus\":1}"), 0),
		"vms in json":   append([]byte("VHB1\x09{\"vms\":[]"), '}', 0),
		"huge count":    append([]byte("VHB1\x02{}\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"), 0xff, 0xff, 0xff, 0xff, 0x0f),
		"usage in json": append([]byte("VHB1\x17{\"usage\":{\"diskUsed\":1}}"), make([]byte, 11)...),
	}
	for name, in := range bad {
		if _, err := DecodeHeartbeatCompact(in); !errors.Is(err, ErrCompactHeartbeat) {
			t.Errorf("%s: %v, want ErrCompactHeartbeat", name, err)
		}
	}
}

// TestHeartbeatDecoderKeepsInventories: beats of one host with the same
// inventory decode the JSON part once and still give each beat's usage;
// what a caller changes in a decoded beat does not leak into the next;
// a changed inventory is decoded afresh.
func TestHeartbeatDecoderKeepsInventories(t *testing.T) {
	var hd HeartbeatDecoder
	hb := sampleBeat(2)
	for i := range 3 {
		hb.Usage.CPUPercent, hb.VMs[0].Usage.CPUPercent = float64(i), float64(10*i)
		b, _ := EncodeHeartbeatCompact(&hb)
		got, err := hd.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.Usage.CPUPercent != float64(i) || got.VMs[0].Usage.CPUPercent != float64(10*i) || got.Labels["zone"] != "a" {
			t.Fatalf("beat %d: %+v", i, got)
		}
		got.Labels["zone"] = "changed by the caller"
	}
	if n := len(hd.heads); n != 1 {
		t.Fatalf("%d inventories kept for one host's unchanged beats", n)
	}
	hb.Labels = map[string]string{"zone": "b"}
	b, _ := EncodeHeartbeatCompact(&hb)
	if got, _ := hd.Decode(b); got.Labels["zone"] != "b" {
		t.Fatalf("a changed inventory: %+v", got.Labels)
	}
}

func FuzzCompactHeartbeat(f *testing.F) {
	hb := sampleBeat(2)
	b, _ := EncodeHeartbeatCompact(&hb)
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		hb, err := DecodeHeartbeatCompact(in)
		if err != nil {
			return
		}
		out, ok := EncodeHeartbeatCompact(&hb)
		if !ok {
			t.Fatal("a decoded heartbeat does not encode")
		}
		again, err := DecodeHeartbeatCompact(out)
		if err != nil || !reflect.DeepEqual(again, hb) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func BenchmarkHeartbeatDecode(b *testing.B) {
	hb := sampleBeat(20)
	j, _ := json.Marshal(hb)
	c, _ := EncodeHeartbeatCompact(&hb)
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			var out Heartbeat
			if err := json.Unmarshal(j, &out); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(j)), "bytes")
	})
	b.Run("compact", func(b *testing.B) {
		for b.Loop() {
			if _, err := DecodeHeartbeatCompact(c); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(c)), "bytes")
	})
	b.Run("compact-kept-inventory", func(b *testing.B) {
		var hd HeartbeatDecoder
		for b.Loop() {
			if _, err := hd.Decode(c); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestDecodeSharedAsDecode: decoding into a reused heartbeat (its VMs'
// room, dirty fields and all) gives what Decode gives, beat after beat,
// and CloneInventory gives it maps and slices of its own.
func TestDecodeSharedAsDecode(t *testing.T) {
	var hd HeartbeatDecoder
	reused := Heartbeat{VMs: make([]VMReport, 20)}
	for i := range reused.VMs {
		reused.VMs[i] = VMReport{Error: "old", Message: "old", Gone: true, AppliedRestartNonce: 9}
	}
	for i, n := range []int{3, 12, 0, 25, 1} {
		hb := Heartbeat{Host: "h1", Labels: map[string]string{"site": "a"}, Driver: "sim", Pools: []model.StoragePoolRef{{Name: "p"}},
			Networks: []string{"n1"}, Usage: model.HostUsage{CPUPercent: float64(i)}}
		for v := range n {
			hb.VMs = append(hb.VMs, VMReport{Project: "p", Name: fmt.Sprintf("v%d", v), UID: "u", Phase: model.PhaseRunning,
				Usage: model.VMUsage{CPUPercent: float64(v), NetRx: int64(i)}})
		}
		b, ok := EncodeHeartbeatCompact(&hb)
		if !ok {
			t.Fatal("not compactable")
		}
		want, err := hd.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := hd.DecodeShared(b, &reused); err != nil {
			t.Fatal(err)
		}
		if n == 0 && len(reused.VMs) == 0 {
			reused.VMs = nil // empty, not nil: its room kept
		}
		if !reflect.DeepEqual(reused, want) {
			t.Fatalf("beat %d: shared %+v, Decode %+v", i, reused, want)
		}
	}
	// a pooled beat serves hosts of different sizes in turn, some with
	// no VM: after the largest, none allocates its reports again
	var pooled Heartbeat
	bodies := map[int][]byte{}
	for _, n := range []int{3, 30, 0, 7} {
		hb := Heartbeat{Host: "h1"}
		for v := range n {
			hb.VMs = append(hb.VMs, VMReport{Project: "p", Name: fmt.Sprintf("v%d", v)})
		}
		bodies[n], _ = EncodeHeartbeatCompact(&hb)
		if err := hd.DecodeShared(bodies[n], &pooled); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(20, func() {
		for _, n := range [...]int{30, 0, 3, 7} {
			_ = hd.DecodeShared(bodies[n], &pooled)
		}
	}); n > 4 {
		t.Fatalf("decoding into a pooled beat allocates %.0f times for four hosts, want 4 (each body's text)", n)
	}
	if err := hd.DecodeShared([]byte("VHB1\x00"), &reused); err == nil || len(reused.VMs) != 0 {
		t.Fatalf("a malformed beat: %v, %d VMs", err, len(reused.VMs))
	}
	var a, b Heartbeat
	body, _ := EncodeHeartbeatCompact(&Heartbeat{Host: "h2", Labels: map[string]string{"k": "v"}})
	_ = hd.DecodeShared(body, &a)
	_ = hd.DecodeShared(body, &b)
	a.CloneInventory()
	a.Labels["k"] = "changed"
	if b.Labels["k"] != "v" {
		t.Fatal("CloneInventory left the labels shared")
	}
}

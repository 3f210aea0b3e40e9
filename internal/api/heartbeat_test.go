package api

import (
	"encoding/json"
	"errors"
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
		"huge count":    append([]byte("VHB1\x02{}"), 0xff, 0xff, 0xff, 0xff, 0x0f),
	}
	for name, in := range bad {
		if _, err := DecodeHeartbeatCompact(in); !errors.Is(err, ErrCompactHeartbeat) {
			t.Errorf("%s: %v, want ErrCompactHeartbeat", name, err)
		}
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
}

package model

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestUsageSampleRoundTrip(t *testing.T) {
	in := UsageSample{Server: "127.0.0.1:8441", At: time.Unix(1.7e9, 0).UTC(), Hosts: []HostSample{{
		Host: "h1", Seen: time.Unix(1.7e9, 5).UTC(), LeaseTTL: 31, Usage: HostUsage{CPUPercent: 12.5, MemoryUsed: GiB},
		VMs: []VMSample{{Key: "p/v1", Usage: VMUsage{CPUPercent: 33.3, CPUTimeNs: 1e12, Memory: 256 * MiB, DiskRead: 1, DiskWrite: 2, NetRx: 3, NetTx: 4}}},
	}}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `["p/v1",33.3,268435456,1000000000000,1,2,3,4]`) {
		t.Fatalf("a VM sample is not the compact array: %s", b)
	}
	var out UsageSample
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if got, want := out.Hosts[0].VMs[0], in.Hosts[0].VMs[0]; got != want {
		t.Fatalf("round trip: %+v, want %+v", got, want)
	}
	for _, bad := range []string{`["p/v1",1]`, `{"k":"p/v1"}`, `["p/v1","x",0,0,0,0,0,0]`} {
		var s VMSample
		if err := json.Unmarshal([]byte(bad), &s); err == nil {
			t.Errorf("%s decoded", bad)
		}
	}
}

// oldVMSampleJSON is how a VM sample was written before the eighth
// round (json.Marshal of the fields): the new writer writes the same.
func oldVMSampleJSON(s VMSample) ([]byte, error) {
	u := s.Usage
	return json.Marshal([]any{s.Key, math.Round(u.CPUPercent*10) / 10, int64(u.Memory), u.CPUTimeNs,
		u.DiskRead, u.DiskWrite, u.NetRx, u.NetTx})
}

// oldVMSampleDecode is how a VM sample was read before: the reader
// takes what it took, with the same values and the same refusals.
func oldVMSampleDecode(b []byte, s *VMSample) error {
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
			return err
		}
	}
	s.Usage.Memory = Bytes(mem)
	return nil
}

// TestVMSampleCodecAsBefore: the direct writer and reader of a VM
// sample give what encoding/json gave, byte for byte and value for
// value, on random samples and on the odd ones (escaped keys, tiny and
// huge numbers, whitespace, nulls, wrong types).
func TestVMSampleCodecAsBefore(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	keys := []string{"p/v1", "proj-a/vm-000123", `p/"q"`, "p/<b>&", "p/é", "p/\x01", ""}
	floats := []float64{0, 0.04, 0.05, 33.35, 100, 1e-7, -1e-7, 5e21, 123456789.123, -0.0}
	for i := range 2000 {
		s := VMSample{Key: keys[i%len(keys)], Usage: VMUsage{CPUPercent: floats[i%len(floats)] + float64(rnd.IntN(3))*rnd.Float64(),
			Memory: Bytes(rnd.Int64()), CPUTimeNs: rnd.Int64() - rnd.Int64(), DiskRead: int64(rnd.IntN(1000)), DiskWrite: -1,
			NetRx: rnd.Int64(), NetTx: 0}}
		got, err := s.MarshalJSON()
		want, werr := oldVMSampleJSON(s)
		if err != nil || werr != nil || string(got) != string(want) {
			t.Fatalf("%+v: wrote %s (%v), encoding/json %s (%v)", s, got, err, want, werr)
		}
		var a, b VMSample
		if err := json.Unmarshal(got, &a); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		if err := oldVMSampleDecode(got, &b); err != nil || a != b {
			t.Fatalf("%s: read %+v, encoding/json %+v (%v)", got, a, b, err)
		}
	}
	for _, in := range []string{` [ "p/v" , 1.5 , 2 ,3,4,5,6, 7 ] `, `["p\/v",1,2,3,4,5,6,7]`, `["p/v",null,2,3,4,5,6,7]`,
		`["p/v",1e2,2,3,4,5,6,7]`, `["p/v",1,2e3,3,4,5,6,7]`, `["p/v",1,2.5,3,4,5,6,7]`, `["p/v",1,2,3,4,5,6,99999999999999999999]`,
		`["p/v","1",2,3,4,5,6,7]`, `[1,1,2,3,4,5,6,7]`, `["p/v",1,2,3,4,5,6]`, `["p/v",1,2,3,4,5,6,7,8]`, `{"k":1}`, `null`} {
		a := VMSample{Key: "before", Usage: VMUsage{CPUPercent: 9}}
		b := a
		aerr := json.Unmarshal([]byte(in), &a)
		berr := oldVMSampleDecode([]byte(in), &b)
		if (aerr == nil) != (berr == nil) || a != b {
			t.Errorf("%s: read %+v (%v), before %+v (%v)", in, a, aerr, b, berr)
		}
	}
	if _, err := (VMSample{Usage: VMUsage{CPUPercent: math.NaN()}}).MarshalJSON(); err == nil {
		t.Error("NaN written")
	}
}

// TestUsageSampleDecodeAllocations: reading a shard of 128 hosts with
// 10 VMs each (what every server reads of every shard every 30 s)
// allocates a few times a VM, not the 30 times a VM of a decode through
// encoding/json field by field.
func TestUsageSampleDecodeAllocations(t *testing.T) {
	b, err := json.Marshal(testShard(128, 10))
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(5, func() {
		var s UsageSample
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatal(err)
		}
	})
	perVM := allocs / (128 * 10)
	t.Logf("%.1f allocations a VM, %d bytes a shard", perVM, len(b))
	if perVM > 4 {
		t.Fatalf("decoding a usage sample allocates %.1f times a VM, want at most 4", perVM)
	}
}

func testShard(hosts, vms int) UsageSample {
	s := UsageSample{Server: "127.0.0.1:8441", At: time.Unix(1.7e9, 0).UTC()}
	for h := range hosts {
		hs := HostSample{Host: fmt.Sprintf("host-%05d", h), Seen: time.Unix(1.7e9, int64(h)).UTC(), LeaseTTL: 31,
			Usage: HostUsage{CPUPercent: 12.5, MemoryUsed: GiB}}
		for v := range vms {
			hs.VMs = append(hs.VMs, VMSample{Key: fmt.Sprintf("project-%d/vm-%06d", v%8, h*vms+v),
				Usage: VMUsage{CPUPercent: float64(v) * 3.3, CPUTimeNs: int64(h) * 1e12, Memory: 256 * MiB, DiskRead: 1, DiskWrite: 2, NetRx: 3, NetTx: 4}})
		}
		s.Hosts = append(s.Hosts, hs)
	}
	return s
}

// BenchmarkUsageSampleCodec: writing and reading one shard of 128 hosts
// with 10 VMs each.
func BenchmarkUsageSampleCodec(b *testing.B) {
	s := testShard(128, 10)
	enc, err := json.Marshal(s)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(s); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1280, "ns/vm")
	})
	b.Run("read", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out UsageSample
			if err := json.Unmarshal(enc, &out); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1280, "ns/vm")
	})
}

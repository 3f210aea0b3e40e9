package server

import (
	"bytes"
	"encoding/json"
	"maps"
	"math/rand/v2"
	"net/http/httptest"
	"testing"
	"testing/iotest"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// TestBeatKeepsInventoryAsApplying: the heartbeat's check of whether a
// beat changes the host's inventory answers what applying the beat to a
// copy of the host and comparing did (random hosts and beats differing
// in one field or a label, or not at all), and copies nothing.
func TestBeatKeepsInventoryAsApplying(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	pick := func(xs ...string) string { return xs[rnd.IntN(len(xs))] }
	labels := func() map[string]string {
		switch rnd.IntN(3) {
		case 0:
			return nil
		case 1:
			return map[string]string{}
		}
		m := map[string]string{}
		for range 1 + rnd.IntN(3) {
			m[pick("site", "rack", "gpu")] = pick("a", "b")
		}
		return m
	}
	for i := range 5000 {
		hb := api.Heartbeat{Labels: labels(), Capacity: model.Resources{CPUs: 4 + rnd.IntN(2), Memory: model.GiB}, Driver: pick("sim", "qemu"),
			Accel: pick("", "kvm"), Address: pick("", "10.0.0.1"), Version: pick("1", "2"), CPUModel: pick("", "x"),
			HypervisorVersion: pick("", "9"), MachineType: pick("", "q35")}
		if rnd.IntN(2) == 0 {
			hb.Pools = []model.StoragePoolRef{{Name: pick("p1", "p2")}}
		}
		if rnd.IntN(2) == 0 {
			hb.Networks = []string{pick("n1", "n2")}
		}
		if rnd.IntN(2) == 0 {
			hb.Net = &model.HostNet{UnderlayMTU: 1400 + rnd.IntN(2)}
		}
		h := &model.Host{State: model.HostReady, Labels: labels()}
		applyInventory(h, &hb, h.LastSeen)
		if rnd.IntN(2) == 0 { // the next beat differs a little, or not
			hb2 := hb
			hb2.Labels = labels()
			switch rnd.IntN(6) {
			case 0:
				hb2.Driver = pick("sim", "qemu")
			case 1:
				hb2.Pools = nil
			case 2:
				hb2.Net = nil
			case 3:
				hb2.Capacity.CPUs++
			}
			hb = hb2
		}
		probe := *h
		probe.Labels = maps.Clone(h.Labels)
		applyInventory(&probe, &hb, h.LastSeen)
		if want := sameInventory(h, &probe); beatKeepsInventory(h, &hb) != want {
			t.Fatalf("case %d: %+v after %+v: keeps %v, applying says %v", i, hb, h, !want, want)
		}
	}
	h := &model.Host{State: model.HostReady, Labels: map[string]string{"site": "a"}}
	hb := api.Heartbeat{Labels: map[string]string{"site": "a"}, Driver: "sim"}
	applyInventory(h, &hb, h.LastSeen)
	if n := testing.AllocsPerRun(100, func() { needsWrite(h, &hb) }); n != 0 {
		t.Fatalf("the check allocates %.0f times a beat, want 0 (it copied the host's labels)", n)
	}
}

// TestBeatAnswerBytes: the kept heartbeat answers are the bytes
// writeJSON wrote for them.
func TestBeatAnswerBytes(t *testing.T) {
	var b beatAnswers
	for _, resp := range []api.HeartbeatResponse{
		{IntervalSeconds: 1, LeaseTTLSeconds: 10, IntervalMillis: 1000, FenceMillis: 6000, Accepts: heartbeatAccepts},
		{IntervalSeconds: 10, LeaseTTLSeconds: 31, IntervalMillis: 10000, FenceMillis: 20000, Accepts: heartbeatAccepts},
		{IntervalSeconds: 10, LeaseTTLSeconds: 31, IntervalMillis: 10000, FenceMillis: 20000, Power: model.HostPowerStandby, Accepts: heartbeatAccepts},
	} {
		for range 2 {
			got, err := b.encode(resp)
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			writeJSON(rec, 200, resp)
			if !bytes.Equal(got, rec.Body.Bytes()) {
				t.Fatalf("kept %s, writeJSON %s", got, rec.Body.Bytes())
			}
			var back api.HeartbeatResponse
			if err := json.Unmarshal(got, &back); err != nil || back.Power != resp.Power || back.IntervalMillis != resp.IntervalMillis {
				t.Fatalf("%s: %+v %v", got, back, err)
			}
		}
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = b.encode(api.HeartbeatResponse{IntervalSeconds: 1, Accepts: heartbeatAccepts}) }); n != 0 {
		t.Fatalf("a kept answer allocates %.0f times", n)
	}
}

// TestReadAllSized: a body read into a buffer of its declared length is
// what io.ReadAll reads, whatever the declared length says (shorter,
// longer, none), in small reads too, and MaxBody still holds.
func TestReadAllSized(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 300)
	for _, n := range []int64{-1, 0, 1, 100, 2999, 3000, 3001, 9000, MaxBody + 1} {
		got, err := readAllSized(iotest.OneByteReader(bytes.NewReader(body)), n)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("declared %d: read %d bytes, %v", n, len(got), err)
		}
	}
	rec := httptest.NewRecorder()
	big := httptest.NewRequest("PUT", "/x", bytes.NewReader(make([]byte, MaxBody+10)))
	if _, he := readBody(rec, big); he == nil || he.status != 413 {
		t.Fatalf("a body over MaxBody: %+v", he)
	}
	if n := testing.AllocsPerRun(20, func() { _, _ = readAllSized(bytes.NewReader(body), int64(len(body))) }); n > 2 {
		t.Fatalf("reading a body of declared length allocates %.0f times, want at most 2", n)
	}
}

// TestReadAllSizedTrustsNoLargeDeclaration: a body that declares a
// megabyte and brings ten bytes gets no megabyte buffer.
func TestReadAllSizedTrustsNoLargeDeclaration(t *testing.T) {
	got, err := readAllSized(bytes.NewReader([]byte("0123456789")), MaxBody)
	if err != nil || string(got) != "0123456789" {
		t.Fatalf("read %q, %v", got, err)
	}
	if cap(got) > presizeMax {
		t.Errorf("a 10-byte body declared as %d bytes holds a %d-byte buffer", MaxBody, cap(got))
	}
}

package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// TestHeartbeatHandlerAllocations: the heartbeat handler's own work for
// a compact beat of a host with 10 running VMs, the same as its last
// (every beat at rest: 1,000 a second at 10,000 hosts), allocates a
// bounded few times: the body, its copy as text for the VMs' names, the
// certificate's serial (the decoded beat's room is reused). Before the eighth round it allocated 35 times (a map and a key
// a VM for the usage hub, a key a VM to check the VMs are the host's, the
// host's labels copied, the answer encoded); the collector was 15 % of a
// server at rest.
func TestHeartbeatHandlerAllocations(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	a := joinAgent(t, ts, "h1")
	a.beat()
	var reps []api.VMReport
	for i := range 10 {
		name := fmt.Sprintf("vm-%02d", i)
		ts.mustCall(201, "POST", "/api/v1/vms", ts.AdminToken(), vmReq(name), nil)
		if _, err := ts.Repo().UpdateVM(ctx, "default", name, func(v *model.VM) error {
			v.Status.Host, v.Status.Phase = "h1", model.PhaseRunning
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		reps = append(reps, api.VMReport{Project: "default", Name: name, Phase: model.PhaseRunning, Usage: model.VMUsage{CPUPercent: 5, Memory: model.GiB}})
	}
	var as api.Assignments // the view has the VMs on h1 once this answers them
	if a.do("GET", "/agent/v1/assignments", nil, &as); len(as.VMs) != 10 {
		t.Fatalf("%d VMs assigned", len(as.VMs))
	}
	hb := api.Heartbeat{Host: "h1", Capacity: model.Resources{CPUs: 8, Memory: 16 * model.GiB, Disk: 100 * model.GiB},
		Driver: "sim", Labels: map[string]string{"zone": "agent-said"}, VMs: reps}
	body, ok := api.EncodeHeartbeatCompact(&hb)
	if !ok {
		t.Fatal("not compactable")
	}
	leaf, err := x509.ParseCertificate(a.cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	state := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf}}}
	request := func() (*httptest.ResponseRecorder, func() error) {
		r := httptest.NewRequest("PUT", "/agent/v1/heartbeat", bytes.NewReader(body))
		r.Header.Set("Content-Type", api.HeartbeatCompactType)
		r.TLS = state
		w := httptest.NewRecorder()
		return w, func() error { return ts.heartbeat(w, r, "h1") }
	}
	for range 3 {
		if w, beat := request(); w.Code != 200 {
			t.Fatalf("beat: %d %s", w.Code, w.Body)
		} else if err := beat(); err != nil {
			t.Fatalf("beat: %v", err)
		}
	}
	if u, _, ok := ts.VMUsage("default/vm-03"); !ok || u.CPUPercent != 5 {
		t.Fatalf("usage %+v %v", u, ok)
	}
	setup := testing.AllocsPerRun(50, func() { _, _ = request() })
	total := testing.AllocsPerRun(50, func() {
		_, beat := request()
		if err := beat(); err != nil {
			t.Fatal(err)
		}
	})
	own := total - setup
	t.Logf("%.0f allocations a beat in the handler (%.0f to make the request)", own, setup)
	if own > 16 {
		t.Fatalf("the heartbeat handler allocates %.0f times a beat of 10 VMs, want at most 16", own)
	}
}

// TestQuietPollAllocations: an assignments answer with nothing new for
// a host of 10 VMs (a long poll that waited out its 30 s: 333 a second
// at 10,000 hosts) makes no map of the host's VMs when no snapshot is
// stored (it made one for the snapshots' lookup every answer).
func TestQuietPollAllocations(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	a := joinAgent(t, ts, "h1")
	a.beat()
	for i := range 10 {
		name := fmt.Sprintf("vm-%02d", i)
		ts.mustCall(201, "POST", "/api/v1/vms", ts.AdminToken(), vmReq(name), nil)
		if _, err := ts.Repo().UpdateVM(ctx, "default", name, func(v *model.VM) error {
			v.Status.Host, v.Status.Phase = "h1", model.PhaseRunning
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	var as api.Assignments
	if a.do("GET", "/agent/v1/assignments", nil, &as); len(as.VMs) != 10 {
		t.Fatalf("%d VMs assigned", len(as.VMs))
	}
	var on hostVMs
	n := testing.AllocsPerRun(50, func() {
		on = ts.view.vmsOn("h1", as.Revision)
		_ = ts.view.snapshotsOn("h1", on.keys)
	})
	t.Logf("%.0f allocations a quiet answer's lookup", n)
	if !on.delta || len(on.vms) != 0 || on.keys != nil {
		t.Fatalf("a quiet delta: %+v", on)
	}
	if n > 3 {
		t.Fatalf("a quiet answer's lookup allocates %.0f times, want at most 3", n)
	}
}

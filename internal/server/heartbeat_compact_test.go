package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// TestCompactHeartbeat: a heartbeat in the compact form is taken as its
// JSON twin is (usage of the host and its VMs recorded), the server
// offers the form in its answer, JSON beats still work, and a malformed
// compact body is a 400 that names the body.
func TestCompactHeartbeat(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	a := joinAgent(t, ts, "h1")
	var first api.HeartbeatResponse
	if code := a.do("PUT", "/agent/v1/heartbeat", api.Heartbeat{Host: "h1", Capacity: model.Resources{CPUs: 8, Memory: 16 * model.GiB}, Driver: "sim"}, &first); code != 200 {
		t.Fatalf("JSON beat: %d", code)
	}
	if !slices.Contains(first.Accepts, api.HeartbeatCompactType) {
		t.Fatalf("the answer does not offer the compact form: %+v", first)
	}
	ts.mustCall(201, "POST", "/api/v1/vms", ts.AdminToken(), vmReq("v1"), nil)
	if _, err := ts.Repo().UpdateVM(ctx, "default", "v1", func(v *model.VM) error {
		v.Status.Host, v.Status.Phase = "h1", model.PhaseRunning
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var as api.Assignments // the cache has the VM on h1 once this answers it
	a.do("GET", "/agent/v1/assignments", nil, &as)

	hb := api.Heartbeat{Host: "h1", Capacity: model.Resources{CPUs: 8, Memory: 16 * model.GiB}, Driver: "sim",
		Usage: model.HostUsage{CPUPercent: 42},
		VMs:   []api.VMReport{{Project: "default", Name: "v1", Phase: model.PhaseRunning, Usage: model.VMUsage{CPUPercent: 77, Memory: model.GiB}}}}
	body, ok := api.EncodeHeartbeatCompact(&hb)
	if !ok {
		t.Fatal("not compactable")
	}
	put := func(b []byte) (int, []byte) {
		req, _ := http.NewRequest("PUT", "https://"+a.addr+"/agent/v1/heartbeat", bytes.NewReader(b))
		req.Header.Set("Content-Type", api.HeartbeatCompactType)
		resp, err := a.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		return resp.StatusCode, buf.Bytes()
	}
	if code, out := put(body); code != 200 {
		t.Fatalf("compact beat: %d %s", code, out)
	}
	u, _, ok := ts.VMUsage("default/v1")
	if !ok || u.CPUPercent != 77 || u.Memory != model.GiB {
		t.Fatalf("VM usage from the compact beat: %+v %v", u, ok)
	}
	var h model.Host
	ts.mustCall(200, "GET", "/api/v1/hosts/h1", ts.AdminToken(), nil, &h)
	if h.Usage.CPUPercent != 42 {
		t.Fatalf("host usage from the compact beat: %+v", h.Usage)
	}
	code, out := put(body[:len(body)-3])
	var e api.Error
	_ = json.Unmarshal(out, &e)
	if code != 400 || e.Field != "body" {
		t.Fatalf("a truncated compact beat: %d %s", code, out)
	}
}

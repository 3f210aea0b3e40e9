package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
)

// TestWatchdogFiringIsAnEvent: a host reports its VM's guest watchdog
// firing with the status; the server keeps the last firing in the VM's
// status and writes a vm.watchdog event once per firing (a report that
// repeats it writes none); a firing dated ahead of the server's clock is
// dated now; a malformed firing is refused naming the field.
func TestWatchdogFiringIsAnEvent(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	admin := ts.AdminToken()
	a := joinAgent(t, ts, "h1")
	a.beat()
	ts.mustCall(201, "POST", "/api/v1/vms", admin, vmReq("w1"), nil)
	if _, err := ts.Repo().UpdateVM(ctx, "default", "w1", func(v *model.VM) error {
		v.Status.Host, v.Status.Phase = "h1", model.PhaseCreating
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	watchdogEvents := func() []model.Event {
		t.Helper()
		evs, _, err := ts.Repo().ListEvents(ctx, 0, "default")
		if err != nil {
			t.Fatal(err)
		}
		var out []model.Event
		for _, e := range evs {
			if e.Kind == state.EventVMWatchdog {
				out = append(out, e)
			}
		}
		return out
	}
	report := func(w *model.WatchdogFiring) (int, model.VM) {
		t.Helper()
		var vm model.VM
		code := a.do("PUT", "/agent/v1/vms/default/w1/status", api.VMReport{Phase: model.PhaseRunning, Watchdog: w}, &vm)
		return code, vm
	}
	if code, _ := report(nil); code != 200 || len(watchdogEvents()) != 0 {
		t.Fatalf("a report without a firing: %d, %d watchdog events", code, len(watchdogEvents()))
	}
	at := time.Now().UTC().Add(-time.Second).Truncate(time.Millisecond)
	first := &model.WatchdogFiring{At: at, Action: "reset", Count: 1}
	code, vm := report(first)
	if code != 200 || vm.Status.Watchdog == nil || !vm.Status.Watchdog.At.Equal(at) || vm.Status.Watchdog.Action != "reset" {
		t.Fatalf("first firing: %d %+v", code, vm.Status.Watchdog)
	}
	evs := watchdogEvents()
	if len(evs) != 1 || !strings.Contains(evs[0].Message, "watchdog fired on h1") || !strings.Contains(evs[0].Message, "action reset") || evs[0].Project != "default" {
		t.Fatalf("events after the first firing: %+v", evs)
	}
	if code, _ := report(first); code != 200 || len(watchdogEvents()) != 1 {
		t.Fatalf("the same firing again: %d, %d events, want 1", code, len(watchdogEvents()))
	}
	// an older firing (a report delayed past a newer one) changes nothing
	if _, vm := report(&model.WatchdogFiring{At: at.Add(-time.Minute), Action: "reset", Count: 1}); !vm.Status.Watchdog.At.Equal(at) || len(watchdogEvents()) != 1 {
		t.Fatalf("an older firing replaced the newer: %+v, %d events", vm.Status.Watchdog, len(watchdogEvents()))
	}
	future := &model.WatchdogFiring{At: time.Now().Add(time.Hour), Action: "pause", Count: 2}
	if _, vm := report(future); vm.Status.Watchdog == nil || vm.Status.Watchdog.At.After(time.Now().Add(time.Minute)) || vm.Status.Watchdog.Count != 2 {
		t.Fatalf("a firing dated an hour ahead: %+v", vm.Status.Watchdog)
	}
	if n := len(watchdogEvents()); n != 2 {
		t.Fatalf("%d watchdog events after the second firing, want 2", n)
	}
	for _, bad := range []struct {
		w     model.WatchdogFiring
		field string
	}{
		{model.WatchdogFiring{Action: "reset", Count: 1}, "watchdog.at"},
		{model.WatchdogFiring{At: at, Action: "reset", Count: 0}, "watchdog.count"},
		{model.WatchdogFiring{At: at, Action: "rm -rf", Count: 1}, "watchdog.action"},
	} {
		b, _ := json.Marshal(api.VMReport{Phase: model.PhaseRunning, Watchdog: &bad.w})
		req, _ := http.NewRequest("PUT", "https://"+a.addr+"/agent/v1/vms/default/w1/status", bytes.NewReader(b))
		resp, err := a.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e api.Error
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 400 || e.Field != bad.field {
			t.Fatalf("report %+v: %d %+v, want 400 naming %s", bad.w, resp.StatusCode, e, bad.field)
		}
	}
}

package server

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/metering"
	"github.com/vpool/vpool/internal/metering/meterstore"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

type samples []metering.Sample

func (s *samples) Sample(context.Context) (metering.Sample, error) {
	out := (*s)[0]
	*s = (*s)[1:]
	return out, nil
}

// TestUsageReportByHand books a small known workload through the
// leader's metering task and reads it back through the API:
//
//	alpha/web: 2 vCPUs, 4 GiB, 20 GiB disk, on an eu host (50 g/kWh),
//	           running 10:00–12:00 on 10 March; 1 kWh and 6000 bytes an hour
//	alpha/db:  1 vCPU, 2 GiB, 100 GiB disk, stopped on a host of no site
//	beta/job:  4 vCPUs, 8 GiB, no disk, running; 2 kWh an hour
//
// with PUE 1.5 and 400 g/kWh where no site says otherwise.
func TestUsageReportByHand(t *testing.T) {
	t0 := time.Date(2025, 3, 10, 10, 0, 0, 0, time.UTC)
	now := t0
	live := &meterstore.Live{}
	ts := startServer(t, nil, func(c *Config) { c.Clock, c.MeterLive = func() time.Time { return now }, live })
	admin := ts.AdminToken()
	for _, p := range []string{"alpha", "beta"} {
		ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: p}, nil)
	}
	ts.mustCall(200, "PATCH", "/api/v1/cluster/metering", admin, api.MeteringSettingsPatch{Sites: map[string]float64{"eu": 50, "us": 380}}, nil)
	ts.mustCall(200, "PATCH", "/api/v1/cluster/metering", admin, api.MeteringSettingsPatch{Sites: map[string]float64{"us": -1}}, nil)
	ts.mustCall(200, "PATCH", "/api/v1/cluster/balance", admin, api.BalanceSettingsPatch{PUE: ptr(1.5), GridIntensity: ptr(400.0)}, nil)
	var src samples
	for i := range 121 {
		h := float64(i) / 60
		src = append(src, metering.Sample{At: t0.Add(time.Duration(i) * time.Minute), VMs: []metering.VMSample{
			{Project: "alpha", Name: "web", Host: "h1", Site: "eu", VCPUs: 2, Memory: 4 * model.GiB, Disk: 20 * model.GiB,
				Running: true, Placed: true, EnergyJ: h * 3.6e6, NetBytes: int64(i) * 100},
			{Project: "alpha", Name: "db", Host: "h2", VCPUs: 1, Memory: 2 * model.GiB, Disk: 100 * model.GiB, Placed: true},
			{Project: "beta", Name: "job", Host: "h2", VCPUs: 4, Memory: 8 * model.GiB, Running: true, Placed: true, EnergyJ: 2 * h * 3.6e6},
		}})
	}
	// the leader writes a rollup that only books at a bounded rate, and
	// answers with what it has not written yet (MeterLive)
	task := meterstore.NewTask(meterstore.Config{Source: &src, Grid: meterstore.SettingsGrid(nil), Clock: func() time.Time { return now },
		Live: live})
	for i := range 121 {
		now = t0.Add(time.Duration(i) * time.Minute)
		if err := task.Step(context.Background(), ts.st); err != nil {
			t.Fatal(err)
		}
	}
	var rep api.UsageReport
	ts.mustCall(200, "GET", "/api/v1/usage?all-projects=true&from=2025-03-10&to=2025-03-11&vms=true", admin, nil, &rep)
	hand := map[string]model.UsageFigures{
		// 2 h × 2 vCPUs, 4 GiB, 20 GiB; 2 kWh; 120 × 100 bytes; 2 kWh × 1.5 × 50 g
		"alpha/web": {VCPUHours: 4, MemGiBHours: 8, DiskGiBHours: 40, NetBytes: 12000, EnergyKWh: 2, CO2Grams: 150},
		// stopped: its disk only
		"alpha/db": {DiskGiBHours: 200},
		// 2 h × 4 vCPUs, 8 GiB; 4 kWh × 1.5 × 400 g
		"beta/job": {VCPUHours: 8, MemGiBHours: 16, EnergyKWh: 4, CO2Grams: 2400},
	}
	got := map[string]model.UsageFigures{}
	for _, p := range rep.Projects {
		for _, v := range p.VMs {
			got[p.Project+"/"+v.VM] = v.UsageFigures
		}
	}
	for k, want := range hand {
		if !sameFigures(got[k], want) {
			t.Errorf("%s: report %+v, hand %+v", k, got[k], want)
		}
	}
	if len(got) != len(hand) || !sameFigures(rep.Total, hand["alpha/web"].Add(hand["alpha/db"]).Add(hand["beta/job"])) {
		t.Errorf("report lines %v, total %+v", got, rep.Total)
	}
	// a member of beta sees beta's alone; not alpha's
	member := ts.tokenFor("beta", model.RoleViewer)
	var mine api.UsageReport
	ts.mustCall(200, "GET", "/api/v1/usage?from=2025-03-10&to=2025-03-11", member, nil, &mine)
	if len(mine.Projects) != 1 || mine.Projects[0].Project != "beta" || !sameFigures(mine.Total, hand["beta/job"]) {
		t.Errorf("beta's member sees %+v", mine)
	}
	if code, _ := ts.call("GET", "/api/v1/usage?project=alpha", member, nil, nil); code != 404 {
		t.Errorf("beta's member asking for alpha: %d", code)
	}
	// the day before holds nothing
	ts.mustCall(200, "GET", "/api/v1/usage?all-projects=true&from=2025-03-09&to=2025-03-10", admin, nil, &rep)
	if len(rep.Projects) != 0 {
		t.Errorf("the day before: %+v", rep.Projects)
	}
	checkUsageMetrics(t, ts)
	if rep.BookedThrough == nil || !rep.BookedThrough.Equal(now) {
		t.Errorf("the leader's report booked through %v, want its last sample %v", rep.BookedThrough, now)
	}
	last := now
	now = now.Add(10 * time.Minute) // the leader's booking is too old to be offered
	checkStoredUsage(t, ts, task, last, hand["alpha/web"])
}

// checkStoredUsage: a server that does not hold the meter (here: the
// leader's last sample too old to be offered) answers from the store,
// which is behind by at most the bounded rate and says so; once the
// leader wrote everything the store answers the whole of web's usage.
func checkStoredUsage(t *testing.T, ts *testServer, task *meterstore.Task, last time.Time, web model.UsageFigures) {
	t.Helper()
	var rep api.UsageReport
	ts.mustCall(200, "GET", "/api/v1/usage?project=alpha&from=2025-03-10&to=2025-03-11&vms=true", ts.AdminToken(), nil, &rep)
	if rep.BookedThrough == nil || !rep.BookedThrough.Before(last) || rep.BookedThrough.Before(last.Add(-meterstore.DefaultPersistVMEvery)) {
		t.Fatalf("from the store: booked through %v, want before %v by at most %v", rep.BookedThrough, last, meterstore.DefaultPersistVMEvery)
	}
	behind := last.Sub(*rep.BookedThrough).Hours()
	// web (2 vCPUs) is booked through BookedThrough or later, not beyond
	if got := rep.Total.VCPUHours; got < web.VCPUHours-2*behind-1e-9 || got > web.VCPUHours-2.0/60+1e-9 {
		t.Errorf("from the store: web booked %v vCPU-hours, booked through %v: want %v to %v", got, rep.BookedThrough,
			web.VCPUHours-2*behind, web.VCPUHours-2.0/60)
	}
	if err := task.Flush(context.Background(), ts.st); err != nil {
		t.Fatal(err)
	}
	ts.mustCall(200, "GET", "/api/v1/usage?project=alpha&from=2025-03-10&to=2025-03-11&vms=true", ts.AdminToken(), nil, &rep)
	if rep.BookedThrough == nil || !rep.BookedThrough.Equal(last) || len(rep.Projects) != 1 || !sameFigures(rep.Projects[0].VMs[1].UsageFigures, web) {
		t.Errorf("after a flush, from the store: %+v", rep)
	}
}

func sameFigures(a, b model.UsageFigures) bool {
	eq := func(x, y float64) bool { return math.Abs(x-y) < 1e-6 }
	return eq(a.VCPUHours, b.VCPUHours) && eq(a.MemGiBHours, b.MemGiBHours) && eq(a.DiskGiBHours, b.DiskGiBHours) &&
		a.NetBytes == b.NetBytes && eq(a.EnergyKWh, b.EnergyKWh) && eq(a.CO2Grams, b.CO2Grams)
}

// checkUsageMetrics: /metrics carries the same figures summed per
// project (alpha: web and db) and per host the VMs ran on (h2: db and
// job), and no series per VM.
func checkUsageMetrics(t *testing.T, ts *testServer) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+ts.Addr()+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+ts.AdminToken())
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for series, want := range map[string]float64{
		`vpool_usage_vcpu_hours_total{project="alpha"}`:     4,
		`vpool_usage_co2_grams_total{project="beta"}`:       2400,
		`vpool_usage_network_bytes_total{project="alpha"}`:  12000,
		`vpool_usage_disk_gib_hours_total{project="alpha"}`: 240,
		`vpool_host_usage_vcpu_hours{host="h2"}`:            8,
		`vpool_host_usage_disk_gib_hours{host="h2"}`:        200,
		`vpool_host_usage_co2_grams{host="h1"}`:             150,
	} {
		_, rest, ok := strings.Cut(string(b), "\n"+series+" ")
		line, _, _ := strings.Cut(rest, "\n")
		got, err := strconv.ParseFloat(line, 64)
		if !ok || err != nil || math.Abs(got-want) > 1e-6 {
			t.Errorf("/metrics: %s %q, want %v", series, line, want)
		}
	}
	if strings.Contains(string(b), `vm="`) {
		t.Errorf("/metrics has series per VM")
	}
}

// TestVMUsagesAnswersAsVMUsage: the batch the energy pass asks for
// (controller.VMUsageBatch) answers each VM as VMUsage does: this
// server's heartbeats or another server's sample, whichever saw the VM's
// host last, and nothing (a zero time) for a VM no server reported.
func TestVMUsagesAnswersAsVMUsage(t *testing.T) {
	ts := startServer(t, nil)
	now := time.Now()
	ts.hub.beat("h1", now, 31, model.HostUsage{}, map[string]model.VMUsage{"p/a": {CPUPercent: 1}, "p/b": {CPUPercent: 2}})
	ts.hub.beat("h2", now.Add(-time.Minute), 31, model.HostUsage{}, map[string]model.VMUsage{"p/c": {CPUPercent: 3}})
	smp := model.UsageSample{Server: "other:1", At: now, Hosts: []model.HostSample{
		{Host: "h1", Seen: now.Add(-time.Hour), VMs: []model.VMSample{{Key: "p/a", Usage: model.VMUsage{CPUPercent: 10}}}},
		{Host: "h2", Seen: now, VMs: []model.VMSample{{Key: "p/c", Usage: model.VMUsage{CPUPercent: 30}}, {Key: "p/d", Usage: model.VMUsage{CPUPercent: 40}}}},
	}}
	b, err := json.Marshal(smp)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ts.st.Txn(context.Background(), nil, []store.Op{store.Put(store.SampleKey("other:1", 0), b)}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, _, ok := ts.VMUsage("p/d"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the view never indexed the sample")
		}
	}
	keys := []string{"p/a", "p/b", "p/c", "p/d", "p/e"}
	us, at := make([]model.VMUsage, len(keys)), make([]time.Time, len(keys))
	at[4] = now // a stale time in the buffer is overwritten
	ts.VMUsages(keys, us, at)
	for i, k := range keys {
		u, when, ok := ts.VMUsage(k)
		if !ok {
			u, when = model.VMUsage{}, time.Time{}
		}
		if us[i] != u || !at[i].Equal(when) {
			t.Errorf("%s: batch %v at %v, VMUsage %v at %v (%v)", k, us[i], at[i], u, when, ok)
		}
	}
	if us[2].CPUPercent != 30 || us[0].CPUPercent != 1 || !at[4].IsZero() {
		t.Fatalf("batch %+v %v", us, at)
	}
}

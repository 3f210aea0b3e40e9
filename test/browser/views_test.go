package browser

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/model"
)

// screenshotDir is where TestDashboardViews leaves a screenshot of every
// main view for people to look at (the README names it);
// VPOOL_SCREENSHOTS names another.
func screenshotDir(t *testing.T) string {
	dir := os.Getenv("VPOOL_SCREENSHOTS")
	if dir == "" {
		dir = "screenshots"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// TestDashboardViews is the operator's day in the dashboard, in headless
// Chromium against a control plane with two simulated hosts: every view
// loads without a console error, each action round-trips to the API
// (checked through the Go client) — cordon, drain, resize, snapshot, the
// serial console, migrate with live progress — and the utilisation
// charts, the balancer's plan, usage and carbon, and the audit trail show
// what happened. Screenshots of the main views go to screenshotDir.
func TestDashboardViews(t *testing.T) {
	exe := requireChromium(t)
	cl := startClusterWith(t, []simHost{
		{name: "alpha", cpus: 16, memory: 64 * model.GiB, labels: map[string]string{"zone": "a", model.SiteLabel: "eu-west"}},
		{name: "beta", cpus: 8, memory: 32 * model.GiB, labels: map[string]string{"zone": "b", model.SiteLabel: "eu-west"}},
	}, func(c *devenv.ServerConfig) {
		c.HistoryInterval = 300 * time.Millisecond
		c.MeterInterval = 300 * time.Millisecond
		c.Controller.EnergyPersistInterval = 300 * time.Millisecond
	})
	ctx := context.Background()
	if _, err := cl.Client.PatchBalanceSettings(ctx, api.BalanceSettingsPatch{IntervalSeconds: ptr(10)}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Client.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: "web-1",
		Spec: model.VMSpec{VCPUs: 1, Memory: 512 * model.MiB, Disks: []model.Disk{{Size: 10 * model.GiB}}}}); err != nil {
		t.Fatal(err)
	}
	bctx, con := startBrowser(t, exe)
	p := &page{t: t, ctx: bctx, console: con, dir: screenshotDir(t)}
	p.signIn(cl)
	p.view("overview", `document.querySelector('#cluster-charts figure[data-chart="cluster-cpu"] path[data-series="CPU"]') !== null`)
	p.shoot("overview")
	p.hostActions(cl)
	p.vmActions(cl)
	p.migrate(cl)
	p.view("balancer", `document.querySelector('#plan-hosts tr[data-host="alpha"]') !== null`)
	p.shoot("balancer")
	p.usage(cl)
	p.view("audit", `document.querySelector('#audit-table tr[data-kind="decision"][data-action="placement"]') !== null`)
	p.waitJS("the cordon in the audit trail", `document.querySelector('#audit-table tr[data-action="PATCH /api/v1/hosts/{name}"][data-object="host/beta"]') !== null`)
	p.shoot("audit")
	p.asTenant(cl)
	if probs := con.problems(); len(probs) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(probs, "\n"))
	}
	t.Logf("screenshots in %s", p.dir)
}

func ptr[T any](v T) *T { return &v }

// view opens a view from the navigation and waits until ready holds.
func (p *page) view(name, ready string) {
	p.t.Helper()
	p.do(name+" view", chromedp.Click(chromedp.CSS(`#nav a[data-view="`+name+`"]`)), chromedp.WaitVisible(chromedp.CSS("#view-"+name)))
	p.waitJS(name+" loaded", ready)
	if probs := p.console.problems(); len(probs) > 0 {
		p.t.Fatalf("the %s view reported errors:\n%s", name, strings.Join(probs, "\n"))
	}
}

// hostActions cordons and uncordons, drains and undrains beta from its
// row, and opens alpha's charts.
func (p *page) hostActions(cl *cluster) {
	t := p.t
	t.Helper()
	p.view("hosts", `document.querySelector('#hosts-table tr[data-host="beta"] button[data-action="cordon"]') !== null`)
	host := func() *model.Host {
		h, err := cl.Client.GetHost(context.Background(), "beta")
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	row := `#hosts-table tr[data-host="beta"] `
	p.click("cordon beta", row+`button[data-action="cordon"]`)
	eventually(t, "beta cordoned", func() bool { return host().Cordoned })
	p.click("uncordon beta", row+`button[data-action="uncordon"]`)
	eventually(t, "beta uncordoned", func() bool { return !host().Cordoned })
	p.click("drain beta", row+`button[data-action="drain"]`)
	eventually(t, "beta in maintenance", func() bool { return host().State == model.HostMaintenance })
	p.waitJS("beta's row says so", `document.querySelector('`+row+`td:nth-child(2)')?.textContent.includes("maintenance")`)
	p.click("undrain beta", row+`button[data-action="undrain"]`)
	eventually(t, "beta ready again", func() bool { return host().State == model.HostReady && !host().Cordoned })
	p.click("open alpha", `#hosts-table tr[data-host="alpha"] button[data-action="open"]`)
	p.waitJS("alpha's charts", `document.querySelector('#host-charts figure[data-chart="host-power"] path') !== null`)
	p.shoot("hosts")
}

// vmActions resizes web-1, snapshots it and types into its console.
func (p *page) vmActions(cl *cluster) {
	t := p.t
	t.Helper()
	p.view("vms", `document.querySelector('`+vmRow("web-1")+` td.phase')?.textContent.includes("running")`)
	p.click("open web-1", vmRow("web-1")+` button[data-action="open"]`)
	p.waitJS("web-1's actions", `document.querySelector("#resize-vcpus").value === "1"`)
	p.do("resize web-1", setValue("#resize-vcpus", "2"), setValue("#resize-memory", "1GiB"), chromedp.Click(chromedp.CSS("#resize-submit")))
	eventually(t, "web-1 resized", func() bool {
		vm, err := cl.Client.GetVM(context.Background(), api.DefaultProject, "web-1")
		return err == nil && vm.Spec.VCPUs == 2 && vm.Spec.Memory == model.GiB
	})
	p.waitJS("the resize said so", `document.querySelector("#action-result").textContent.includes("2 vCPUs")`)
	p.do("snapshot web-1", setValue("#snapshot-name", "before-upgrade"), chromedp.Click(chromedp.CSS("#snapshot-submit")))
	eventually(t, "the snapshot taken", func() bool {
		l, err := cl.Client.ListSnapshots(context.Background(), api.DefaultProject, "web-1")
		return err == nil && len(l) == 1 && l[0].Name == "before-upgrade" && l[0].Phase == model.SnapshotReady
	})
	p.waitJS("the snapshot listed", `document.querySelector('#detail-snapshots li[data-snapshot="before-upgrade"]')?.textContent.includes("ready")`)
	p.click("open the console", "#console-open")
	frame := `document.querySelector("#console-frame").contentWindow`
	p.waitJS("the console connected", frame+`.vpoolConsole?.state() === 1`)
	p.waitJS("the guest's prompt", frame+`.vpoolConsole.text().includes("sim console of default.web-1")`)
	p.waitJS("type into the console", `(`+frame+`.vpoolConsole.term.input("echo hello from the browser\r"), true)`)
	p.waitJS("the guest's answer", frame+`.vpoolConsole.text().includes("hello from the browser")`)
	// xterm.js draws only what is on screen: the page scrolls the console into view
	p.waitJS("the answer drawn", frame+`.document.querySelector(".xterm-rows")?.textContent.includes("hello from the browser")`)
	p.shoot("vm-console")
	p.click("close the console", "#console-close")
}

// migrate moves web-1 to the other host from its detail pane and
// follows the migration's progress to the end.
func (p *page) migrate(cl *cluster) {
	t := p.t
	t.Helper()
	vm, err := cl.Client.GetVM(context.Background(), api.DefaultProject, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	to := map[string]string{"alpha": "beta", "beta": "alpha"}[vm.Status.Host]
	p.waitJS("the target offered", `[...document.querySelector("#migrate-target").options].some((o) => o.value === `+strconv.Quote(to)+`)`)
	p.do("migrate web-1", chromedp.SetValue(chromedp.CSS("#migrate-target"), to), chromedp.Click(chromedp.CSS("#migrate-submit")))
	p.waitJS("the migration started", `document.querySelector("#action-result").textContent.includes("to `+to+`")`)
	p.view("migrations", `document.querySelector('#migrations-table tr[data-vm="default/web-1"]') !== null`)
	p.waitJS("the migration completed", `document.querySelector('#migrations-table tr[data-vm="default/web-1"] td.phase')?.textContent.includes("completed")`)
	p.waitJS("its progress full", `document.querySelector('#migrations-table tr[data-vm="default/web-1"] [role="progressbar"]')?.getAttribute("aria-valuenow") === "100"`)
	eventually(t, "web-1 on "+to, func() bool {
		vm, err := cl.Client.GetVM(context.Background(), api.DefaultProject, "web-1")
		return err == nil && vm.Status.Host == to && vm.Status.Migration == ""
	})
	p.shoot("migrations")
}

// usage waits for the meter to book web-1 and shows it with its carbon.
func (p *page) usage(cl *cluster) {
	t := p.t
	t.Helper()
	eventually(t, "web-1 metered", func() bool {
		rep, err := cl.Client.Usage(context.Background(), client.UsageQuery{AllProjects: true, VMs: true})
		return err == nil && len(rep.Projects) == 1 && rep.Total.VCPUHours > 0
	})
	p.view("usage", `document.querySelector('#usage-table tr[data-usage="default/web-1"]') !== null`)
	p.waitJS("the CO2 chart", `document.querySelector('#usage-chart rect[data-bar="default"]') !== null`)
	p.shoot("usage")
}

// asTenant signs in as a viewer of the default project: every view
// loads, shows the project's own usage and audit records, and says what
// only admins see.
func (p *page) asTenant(cl *cluster) {
	t := p.t
	t.Helper()
	tok, err := cl.Client.CreateToken(context.Background(), api.TokenCreateRequest{Project: api.DefaultProject, Role: model.RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	p.do("sign out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login-token")))
	p.do("sign in as a viewer", setValue("#login-token", tok.Secret), chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#app")))
	for _, v := range []struct{ name, ready string }{
		{"overview", `document.querySelector("#util-note").textContent.includes("admins")`},
		{"hosts", `document.querySelector('#hosts-table tr[data-host="alpha"] button[data-action="cordon"]')?.disabled === true`},
		{"vms", `document.querySelector('` + vmRow("web-1") + `') !== null`},
		{"migrations", `document.querySelector('#migrations-table tr[data-vm="default/web-1"]') !== null`},
		{"balancer", `document.querySelector("#plan-empty").textContent.includes("admins")`},
		{"usage", `document.querySelector('#usage-table tr[data-usage="default/web-1"]') !== null`},
		{"audit", `document.querySelector('#audit-table tr[data-object="vm/default/web-1"]') !== null && document.querySelector('#audit-table tr[data-object="host/beta"]') === null`},
	} {
		p.view(v.name, v.ready)
	}
}

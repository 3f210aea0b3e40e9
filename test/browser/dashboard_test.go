package browser

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/model"
)

// TestDashboard signs in, looks at the overview and the hosts, creates a
// VM through the form, is told about bad input next to the field at
// fault, opens the VM's placement explanation, sees the live events, stops,
// starts, restarts and deletes the VM — all in headless Chromium against a
// real control plane with two simulated hosts.
func TestDashboard(t *testing.T) {
	exe := requireChromium(t)
	cl := startCluster(t, []simHost{
		{name: "alpha", cpus: 16, memory: 64 * model.GiB, labels: map[string]string{"zone": "a", "disk": "ssd"}},
		{name: "beta", cpus: 8, memory: 32 * model.GiB, labels: map[string]string{"zone": "b"}},
	})
	ctx, con := startBrowser(t, exe)
	p := &page{t: t, ctx: ctx, console: con, dir: t.TempDir()}

	p.signIn(cl)
	p.createVM(cl)
	p.checkFieldErrors(cl)
	p.checkDetail()
	p.screenshots()
	p.checkPower(cl)
	p.checkNames()
	p.deleteVM(cl)
	if probs := con.problems(); len(probs) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(probs, "\n"))
	}
}

// signIn follows the redirect, is refused with a wrong token, signs in
// with the admin token and checks the overview and the hosts table.
func (p *page) signIn(cl *cluster) {
	t := p.t
	t.Helper()
	p.do("open the dashboard", chromedp.Navigate(cl.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#login-token")))
	loc, err := chromedp.Run(p.ctx, chromedp.Location())
	if err != nil || !strings.HasSuffix(loc, "/ui/") {
		t.Fatalf("location = %q, %v; want the root to redirect to /ui/", loc, err)
	}

	// A wrong token is refused with the server's reason.
	p.do("sign in with a wrong token", setValue("#login-token", "vpa_wrong"), chromedp.Click(chromedp.CSS("#login-submit")))
	p.waitJS("the refusal", `document.querySelector("#login-error").textContent.includes("invalid token")`)
	p.shoot("login")

	// The admin token gets in; the overview counts both hosts ready.
	p.do("sign in", setValue("#login-token", cl.Token), chromedp.Click(chromedp.CSS("#login-submit")),
		chromedp.WaitVisible(chromedp.CSS("#view-overview")))
	p.waitJS("two ready hosts on the overview", `document.querySelector('#hosts-by-state li[data-host-state="ready"] .n')?.textContent === "2"`)
	if got, _ := chromedp.Run(p.ctx, chromedp.Evaluate[string](`sessionStorage.getItem("vpool.token")`)); got != cl.Token {
		t.Errorf("the token is not kept in sessionStorage")
	}

	p.do("hosts view", chromedp.Click(chromedp.CSS(`#nav a[data-view="hosts"]`)), chromedp.WaitVisible(chromedp.CSS("#view-hosts")))
	p.waitJS("both hosts listed", `document.querySelectorAll('#hosts-table tr[data-host="alpha"], #hosts-table tr[data-host="beta"]').length === 2`)
	if row := p.text(`#hosts-table tr[data-host="alpha"]`); !strings.Contains(row, "ready") || !strings.Contains(row, "64GiB") || !strings.Contains(row, "zone=a") {
		t.Errorf("alpha's row = %q, want its state, memory and labels", row)
	}
}

// createVM creates web-1 through the form: a VM only alpha can hold
// (40GiB of memory), so the placement explanation has a rejection to show.
func (p *page) createVM(cl *cluster) {
	t := p.t
	t.Helper()
	p.do("VMs view", chromedp.Click(chromedp.CSS(`#nav a[data-view="vms"]`)), chromedp.WaitVisible(chromedp.CSS("#create-form")))
	p.fill("web-1", "4", "40GiB", "20GiB")
	p.waitJS("web-1 listed", `document.querySelector('`+vmRow("web-1")+`') !== null`)
	p.waitJS("web-1 running", `document.querySelector('`+vmRow("web-1")+` td.phase')?.textContent.includes("running")`)
	vm, err := cl.Client.GetVM(context.Background(), api.DefaultProject, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Spec.VCPUs != 4 || vm.Spec.Memory != 40*model.GiB || vm.Spec.DiskSize() != 20*model.GiB || vm.Status.Host != "alpha" {
		t.Errorf("web-1 = %d vCPUs, %s memory, %s disk on %q; want 4, 40GiB, 20GiB on alpha",
			vm.Spec.VCPUs, vm.Spec.Memory, vm.Spec.DiskSize(), vm.Status.Host)
	}
	if row := p.text(vmRow("web-1")); !strings.Contains(row, "alpha") || !strings.Contains(row, "40GiB") {
		t.Errorf("web-1's row = %q, want its host and memory", row)
	}
}

// checkDetail opens web-1: beta rejected by a filter, alpha chosen with its
// score parts; and the events panel got web-1's creation over the stream.
func (p *page) checkDetail() {
	p.t.Helper()
	p.click("open web-1", vmRow("web-1")+` button[data-action="open"]`)
	p.do("the detail pane", chromedp.WaitVisible(chromedp.CSS("#vm-detail")))
	p.waitJS("the placement explanation", `document.querySelector("#detail-summary").textContent.includes("placed on alpha")`)
	p.waitJS("alpha chosen, with its score parts", `document.querySelector('#detail-candidates tr.selected[data-candidate="alpha"] td.parts')?.textContent.includes("binpack")`)
	if n := p.text("#detail-filters tr[data-filter] td.num"); n != "1" {
		p.t.Errorf("hosts rejected by the first filter = %q, want 1 (beta has too little memory)", n)
	}
	p.waitJS("the event stream live", `document.querySelector("#events-status").textContent === "live"`)
	p.waitJS("web-1's events", `document.querySelector('#events-list li[data-kind="vm.created"][data-object="vm/default/web-1"]') !== null`)
}

// screenshots keeps the VMs view with web-1's detail, then the overview
// and the hosts, and comes back to the VMs.
func (p *page) screenshots() {
	p.t.Helper()
	p.shoot("")
	for _, view := range []struct{ name, ready string }{
		{"overview", `document.querySelector('#vms-by-phase li[data-vm-phase="running"]') !== null`},
		{"hosts", `document.querySelector('#hosts-table tr[data-host="alpha"] td:nth-child(6)')?.textContent === "1"`},
	} {
		p.do(view.name+" view", chromedp.Click(chromedp.CSS(`#nav a[data-view="`+view.name+`"]`)), chromedp.WaitVisible(chromedp.CSS("#view-"+view.name)))
		p.waitJS(view.name+" up to date", view.ready)
		p.shoot(view.name)
	}
	p.do("back to the VMs", chromedp.Click(chromedp.CSS(`#nav a[data-view="vms"]`)), chromedp.WaitVisible(chromedp.CSS("#vm-detail")))
	p.waitJS("web-1 listed again", `document.querySelector('`+vmRow("web-1")+`') !== null`)
}

// checkPower stops, starts and restarts web-1; the agent follows.
func (p *page) checkPower(cl *cluster) {
	p.t.Helper()
	btn := func(action string) string { return vmRow("web-1") + ` button[data-action="` + action + `"]` }
	p.click("stop web-1", btn("stop"))
	p.waitJS("web-1 stopped", `document.querySelector('`+vmRow("web-1")+` td.phase')?.textContent.includes("stopped")`)
	p.click("start web-1", btn("start"))
	p.waitJS("web-1 running again", `document.querySelector('`+vmRow("web-1")+` td.phase')?.textContent.includes("running")`)
	p.click("restart web-1", btn("restart"))
	eventually(p.t, "the restart asked for", func() bool {
		vm, err := cl.Client.GetVM(context.Background(), api.DefaultProject, "web-1")
		return err == nil && vm.Spec.RestartNonce == 1
	})
}

// checkNames finds every control a screen reader could not name.
func (p *page) checkNames() {
	p.t.Helper()
	unnamed, err := chromedp.Run(p.ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("input, select, button")]
		.filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label") && !e.textContent.trim())
		.map((e) => e.outerHTML)`))
	if err != nil || len(unnamed) > 0 {
		p.t.Errorf("controls without an accessible name: %v %v", unnamed, err)
	}
}

// deleteVM deletes web-1 with two clicks; the row and the detail pane go.
func (p *page) deleteVM(cl *cluster) {
	p.t.Helper()
	del := vmRow("web-1") + ` button[data-action="delete"]`
	p.click("ask to delete web-1", del)
	p.waitJS("the confirmation", `document.querySelector('`+del+`')?.textContent === "Confirm delete"`)
	p.click("confirm", del)
	p.waitJS("web-1 gone from the table", `document.querySelector('`+vmRow("web-1")+`') === null`)
	p.waitJS("the detail pane closed", `document.querySelector("#vm-detail").hidden`)
	if _, err := cl.Client.GetVM(context.Background(), api.DefaultProject, "web-1"); !isNotFound(err) {
		p.t.Errorf("GetVM after delete: %v, want not found", err)
	}
}

// fill submits the create form.
func (p *page) fill(name, vcpus, memory, disk string) {
	p.t.Helper()
	p.do("fill the create form",
		setValue("#vm-name", name), setValue("#vm-vcpus", vcpus), setValue("#vm-memory", memory), setValue("#vm-disk", disk),
		chromedp.Click(chromedp.CSS("#vm-create")))
}

// checkFieldErrors submits bad input three ways: a size the form cannot
// parse (caught in the page), a name the API refuses and a size the API
// refuses; each is shown at its field and creates nothing.
func (p *page) checkFieldErrors(cl *cluster) {
	p.t.Helper()
	tests := []struct {
		name, memory string
		field        string // the input marked invalid
		want         string // in the field's error text
	}{
		{name: "web-2", memory: "12XB", field: "vm-memory", want: `"12XB" is not a size`},
		{name: "Web_2", memory: "1GiB", field: "vm-name", want: "is not a DNS label"},
		{name: "web-2", memory: "8MiB", field: "vm-memory", want: "must be at least 16MiB"},
	}
	for _, tt := range tests {
		p.fill(tt.name, "1", tt.memory, "")
		errSel := "#" + tt.field + "-error"
		p.waitJS(tt.field+" error for "+tt.memory, `document.querySelector("`+errSel+`").textContent.includes(`+strconv.Quote(tt.want)+`)`)
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		invalid, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector("#`+tt.field+`").getAttribute("aria-invalid") === "true"`))
		cancel()
		if err != nil || !invalid {
			p.t.Errorf("%s (%s): the input is not marked aria-invalid", tt.field, tt.memory)
		}
		if summary := p.text("#create-error"); summary == "" {
			p.t.Errorf("%s (%s): no error summary", tt.field, tt.memory)
		}
	}
	vms, err := cl.Client.ListVMs(context.Background(), client.ListVMsOptions{Project: api.DefaultProject})
	if err != nil {
		p.t.Fatal(err)
	}
	if len(vms.Items) != 1 {
		p.t.Errorf("bad input created VMs: have %d, want only web-1", len(vms.Items))
	}
}

func isNotFound(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == api.CodeNotFound
}

package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// pagedServer answers GET /api/v1/vms with n VMs in pages of its limit,
// following continue tokens (the page's last index).
func pagedServer(t *testing.T, n int, calls *int) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*calls++
		q := r.URL.Query()
		limit, err := strconv.Atoi(q.Get("limit"))
		if err != nil || limit < 1 {
			t.Errorf("a list without a page limit: %s", r.URL.RawQuery)
			limit = n
		}
		from := 0
		if c := q.Get("continue"); c != "" {
			from, _ = strconv.Atoi(c)
		}
		page := api.VMList{Items: []model.VM{}, Revision: 7}
		for i := from; i < min(from+limit, n); i++ {
			page.Items = append(page.Items, model.VM{Meta: model.Meta{Name: fmt.Sprintf("vm-%05d", i), Project: "p", CreatedAt: now},
				Spec: model.VMSpec{VCPUs: 1 + i%3, Memory: model.GiB}, Status: model.VMStatus{Phase: model.PhaseRunning, Host: "h" + strconv.Itoa(i%7)}})
		}
		if from+limit < n {
			page.Continue = strconv.Itoa(from + limit)
		}
		_ = json.NewEncoder(w).Encode(page)
	}))
}

// vm list follows the pages and writes each as it arrives: every VM once,
// in order, one table (columns as wide as the first page needs), or one
// JSON array.
func TestVMListFollowsPages(t *testing.T) {
	const n = 1234
	calls := 0
	srv := pagedServer(t, n, &calls)
	defer srv.Close()
	in := invocation{env: map[string]string{EnvAddr: srv.URL, EnvToken: "tok"}}
	res := in.run(t, "vm", "list")
	if res.code != 0 {
		t.Fatalf("vm list: %d %s", res.code, res.stderr)
	}
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if len(lines) != n+1 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[n], "vm-01233") {
		t.Fatalf("%d lines, first %q, last %q", len(lines), lines[0], lines[len(lines)-1])
	}
	if calls != 3 {
		t.Fatalf("%d requests for %d VMs in pages of %d", calls, n, api.DefaultPageLimit)
	}
	col := strings.Index(lines[0], "PROJECT")
	for _, l := range lines[1:] {
		if l[col:col+2] != "p " {
			t.Fatalf("misaligned row %q (PROJECT at %d)", l, col)
		}
	}
	res = in.run(t, "vm", "list", "-o", "json", "--host", "h3")
	var vms []model.VM
	if err := json.Unmarshal([]byte(res.stdout), &vms); err != nil {
		t.Fatalf("json output: %v\n%.300s", err, res.stdout)
	}
	if len(vms) != 176 || vms[0].Name != "vm-00003" {
		t.Fatalf("%d VMs on h3 (first %s)", len(vms), vms[0].Name)
	}
}

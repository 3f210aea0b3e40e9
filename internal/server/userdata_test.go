package server

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// udSecret is a cloud-init document with a password: what must never be
// read from the store, an answer, an event or the audit trail.
const udSecret = "#cloud-config\npassword: s3cr3t-of-beta-7f3a\nchpasswd: {expire: false}\n"

// udLeak says where raw (an answer, a stored value) gives the user data
// away: in clear, in a JSON string, or its sealed copy; "" when nowhere.
func udLeak(raw []byte) string {
	js, _ := json.Marshal(udSecret)
	switch {
	case bytes.Contains(raw, []byte("s3cr3t-of-beta")):
		return "the password in clear"
	case bytes.Contains(raw, js[1:len(js)-1]):
		return "the document as a JSON string"
	case bytes.Contains(raw, []byte(base64.StdEncoding.EncodeToString([]byte(udSecret))[:24])):
		return "the document in base64"
	case bytes.Contains(raw, []byte(`"userDataSealed"`)):
		return "its sealed copy"
	}
	return ""
}

// rawGet is a GET of the user API, its body as is.
func (ts *testServer) rawGet(path, token string) (int, []byte) {
	ts.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+ts.Addr()+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := ts.client.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// rawAgent is a call of the agent protocol as host a, its body as is.
func (a *testAgent) raw(method, path string, body any) (int, []byte) {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "https://"+a.addr+path, rd)
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// storeLeaks names the stored keys whose values give the user data away.
func storeLeaks(t *testing.T, st store.Store) []string {
	t.Helper()
	kvs, _, err := st.List(context.Background(), store.Root)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range kvs {
		if w := udLeak(kv.Value); w != "" && w != "its sealed copy" {
			out = append(out, kv.Key+": "+w)
		}
	}
	return out
}

// A VM's user data is sealed in the store (the VM record and every copy
// of its spec), never shown by the API — to its project's members,
// viewers or admins, in answers, lists, events or the audit trail — and
// given in clear only to the host that runs the VM and the target of its
// migration.
func TestUserDataSealedAtRest(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "beta"}, nil)
	member, viewer := ts.tokenFor("beta", model.RoleMember), ts.tokenFor("beta", model.RoleViewer)
	ha, hb, hc := joinAgent(t, ts, "ha"), joinAgent(t, ts, "hb"), joinAgent(t, ts, "hc")
	for _, a := range []*testAgent{ha, hb, hc} {
		a.beat()
	}

	// creates: one VM, a batch, a scaling group's template
	req := vmReq("web")
	req.Spec.CloudInit = &model.CloudInit{Hostname: "web", UserData: udSecret}
	var created model.VM
	ts.mustCall(201, "POST", "/api/v1/vms?project=beta", member, req, &created)
	ci := created.Spec.CloudInit
	if ci == nil || ci.UserData != "" || ci.UserDataSealed != nil || ci.UserDataSize != len(udSecret) || !strings.HasPrefix(ci.UserDataDigest, pki.DigestPrefix) {
		t.Fatalf("the create's answer shows cloudInit %+v: want no document, no sealed copy, size %d and a digest", ci, len(udSecret))
	}
	spec := req.Spec
	ts.mustCall(201, "POST", "/api/v1/vms:batch?project=beta", member, api.VMBatchRequest{Prefix: "many", Count: 2, Spec: &spec}, nil)
	ts.mustCall(201, "POST", "/api/v1/groups?project=beta", member, api.GroupCreateRequest{Name: "g",
		Spec: model.GroupSpec{Template: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB, CloudInit: &model.CloudInit{UserData: udSecret}}, Min: 0, Max: 2}}, nil)

	// the store holds none of it in clear
	if leaks := storeLeaks(t, ts.st); len(leaks) > 0 {
		t.Fatalf("the store gives the user data away:\n%s", strings.Join(leaks, "\n"))
	}
	kv, err := ts.st.Get(ctx, store.VMKey("beta", "web"))
	if err != nil || !bytes.Contains(kv.Value, []byte(`"userDataSealed"`)) {
		t.Fatalf("the VM record holds no sealed user data: %s %v", kv.Value, err)
	}

	// placed on ha, migrating to hc
	vm, err := ts.Repo().UpdateVM(ctx, "beta", "web", func(v *model.VM) error {
		v.Status.Host, v.Status.Phase = "ha", model.PhaseCreating
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Repo().CreateMigration(ctx, &model.Migration{Meta: model.Meta{Project: "beta"}, VM: "web", VMUID: vm.UID,
		Source: "ha", Target: "hc", Mode: model.MigrationLive, Spec: vm.Spec}); err != nil {
		t.Fatal(err)
	}
	if leaks := storeLeaks(t, ts.st); len(leaks) > 0 {
		t.Fatalf("the store gives the user data away once the VM migrates:\n%s", strings.Join(leaks, "\n"))
	}

	// the hosts: ha and hc get it in clear where they need it, hb nowhere
	var as api.Assignments
	if code := ha.do("GET", "/agent/v1/assignments", nil, &as); code != 200 || len(as.VMs) != 1 {
		t.Fatalf("ha's assignments: %d %+v", code, as)
	}
	if got := as.VMs[0].Spec.CloudInit; got == nil || got.UserData != udSecret || got.UserDataSealed != nil {
		t.Fatalf("the VM's host got cloudInit %+v, want the document in clear", got)
	}
	var after model.VM
	if code := ha.do("PUT", "/agent/v1/vms/beta/web/status", api.VMReport{Phase: model.PhaseRunning}, &after); code != 200 ||
		after.Spec.CloudInit == nil || after.Spec.CloudInit.UserData != udSecret {
		t.Fatalf("the status answer to the VM's host: %d %+v", code, after.Spec.CloudInit)
	}
	var ms api.AgentMigrations
	if code := hc.do("GET", "/agent/v1/migrations", nil, &ms); code != 200 || len(ms.Items) != 1 ||
		ms.Items[0].Spec.CloudInit == nil || ms.Items[0].Spec.CloudInit.UserData != udSecret {
		t.Fatalf("the migration's target: %d %+v", code, ms)
	}
	for _, c := range []struct {
		a            *testAgent
		method, path string
		body         any
	}{
		{hb, "GET", "/agent/v1/assignments", nil},
		{hb, "GET", "/agent/v1/migrations", nil},
		{hb, "GET", "/agent/v1/backups?wait=0s", nil},
		{hb, "PUT", "/agent/v1/vms/beta/web/status", api.VMReport{Phase: model.PhaseRunning}},
		{hb, "GET", "/agent/v1/vms/beta/web/owner", nil},
		{ha, "GET", "/agent/v1/migrations", nil}, // the source runs the VM already
	} {
		if code, body := c.a.raw(c.method, c.path, c.body); udLeak(body) != "" {
			t.Errorf("host %s at %s %s (%d) got %s: %s", c.a.host, c.method, c.path, code, udLeak(body), body)
		}
	}

	// every answer of the API, to every caller
	for _, tok := range []struct{ name, token string }{{"admin", admin}, {"member", member}, {"viewer", viewer}} {
		for _, path := range []string{
			"/api/v1/vms/web?project=beta", "/api/v1/vms?project=beta", "/api/v1/vms?project=beta&limit=1",
			"/api/v1/groups?project=beta", "/api/v1/groups/g?project=beta", "/api/v1/migrations?project=beta",
			"/api/v1/events?project=beta", "/api/v1/audit?project=beta",
		} {
			code, body := ts.rawGet(path, tok.token)
			if code != 200 {
				t.Fatalf("%s GET %s: %d %s", tok.name, path, code, body)
			}
			if w := udLeak(body); w != "" {
				t.Errorf("%s GET %s shows %s: %s", tok.name, path, w, body)
			}
		}
	}
	if code, body := ts.rawGet("/api/v1/vms?all-projects=true", admin); code != 200 || udLeak(body) != "" {
		t.Errorf("the list of all projects (%d) shows %s", code, udLeak(body))
	}
	var got model.VM
	ts.mustCall(200, "GET", "/api/v1/vms/many-2?project=beta", viewer, nil, &got)
	if ci := got.Spec.CloudInit; ci == nil || ci.UserDataSize != len(udSecret) || ci.UserDataDigest != created.Spec.CloudInit.UserDataDigest {
		t.Errorf("a VM of the batch shows %+v: the same document has the same digest", ci)
	}
}

// What only the server sets is refused in a request, naming the field:
// a client cannot plant a sealed copy (of another VM, another project) or
// a digest that names a document it does not send.
func TestUserDataIsWriteOnly(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	sealed := &model.SealedValue{KeyID: "0011223344556677", Data: make([]byte, 64)}
	for _, c := range []struct {
		name, path string
		body       any
		field      string
	}{
		{"sealed copy", "/api/v1/vms", api.VMCreateRequest{Name: "a", Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB,
			CloudInit: &model.CloudInit{UserDataSealed: sealed}}}, "spec.cloudInit.userDataSealed"},
		{"digest", "/api/v1/vms", api.VMCreateRequest{Name: "a", Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB,
			CloudInit: &model.CloudInit{UserData: "x", UserDataDigest: pki.DigestPrefix + "00"}}}, "spec.cloudInit.userDataDigest"},
		{"size in a batch item", "/api/v1/vms:batch", api.VMBatchRequest{VMs: []api.VMCreateRequest{{Name: "a", Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB,
			CloudInit: &model.CloudInit{UserDataSize: 3}}}}}, "vms[0].spec.cloudInit.userDataSize"},
		{"sealed copy in a batch spec", "/api/v1/vms:batch", api.VMBatchRequest{Prefix: "b", Count: 2, Spec: &model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB,
			CloudInit: &model.CloudInit{UserDataSealed: sealed}}}, "spec.cloudInit.userDataSealed"},
		{"sealed copy in a group's template", "/api/v1/groups", api.GroupCreateRequest{Name: "g", Spec: model.GroupSpec{Max: 1,
			Template: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB, CloudInit: &model.CloudInit{UserDataSealed: sealed}}}}, "spec.template.cloudInit.userDataSealed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, e := ts.call("POST", c.path, admin, c.body, nil)
			if code != 400 || e.Field != c.field || !strings.Contains(e.Message, "set by the server") {
				t.Fatalf("%d %+v, want 400 naming %s", code, e, c.field)
			}
		})
	}
	kvs, _, _ := ts.st.List(context.Background(), store.VMsPrefix)
	if len(kvs) != 0 {
		t.Fatalf("%d VMs stored by refused requests", len(kvs))
	}
}

// Records an older server stored with user data in clear — before this
// server started, and while it runs (a server of the cluster not yet
// upgraded) — are sealed in place, and their VMs still get their user
// data on their host.
func TestPlaintextUserDataIsSealed(t *testing.T) {
	ms := memstore.New()
	t.Cleanup(func() { ms.Close() })
	ctx := context.Background()
	legacy := func(ts *testServer, name, host string) {
		t.Helper()
		vm := &model.VM{Meta: model.Meta{Name: name, Project: "default"}, Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB,
			CloudInit: &model.CloudInit{UserData: udSecret}}}
		var err error
		if ts == nil {
			b, _ := json.Marshal(vm)
			_, _, err = ms.Txn(ctx, nil, []store.Op{store.Put(store.VMKey("default", name), b)})
		} else {
			_, err = ts.Repo().CreateVM(ctx, vm)
		}
		if err != nil {
			t.Fatal(err)
		}
		if host != "" && ts != nil {
			if _, err := ts.Repo().UpdateVM(ctx, "default", name, func(v *model.VM) error { v.Status.Host = host; return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	legacy(nil, "before", "")
	ts := startServer(t, ms)
	legacy(ts, "while", "ha")
	deadline := time.Now().Add(10 * time.Second)
	for leaks := storeLeaks(t, ms); len(leaks) > 0; leaks = storeLeaks(t, ms) {
		if time.Now().After(deadline) {
			t.Fatalf("user data stored in clear stays so:\n%s", strings.Join(leaks, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	var got model.VM
	ts.mustCall(200, "GET", "/api/v1/vms/before", ts.AdminToken(), nil, &got)
	if ci := got.Spec.CloudInit; ci == nil || ci.UserDataSize != len(udSecret) || ci.UserDataDigest == "" || ci.UserData != "" {
		t.Fatalf("a sealed record shows %+v", ci)
	}
	ha := joinAgent(t, ts, "ha")
	ha.beat()
	var as api.Assignments
	if code := ha.do("GET", "/agent/v1/assignments", nil, &as); code != 200 || len(as.VMs) != 1 ||
		as.VMs[0].Spec.CloudInit == nil || as.VMs[0].Spec.CloudInit.UserData != udSecret {
		t.Fatalf("the VM's host after sealing: %d %+v", code, as)
	}
}

// User data sealed with another cluster's key (a backup restored across
// clusters from a record, a store copied with the wrong ca-seal.key) is
// never handed over empty: the host gets it sealed (and its agent refuses
// it), a restore is refused naming the field and both keys.
func TestUserDataOfAnotherKey(t *testing.T) {
	ts := startServer(t, nil)
	other, _ := pki.NewSealKey()
	data, err := pki.SealBytes(other, []byte(udSecret), userDataAD("default"))
	if err != nil {
		t.Fatal(err)
	}
	spec := model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB, CloudInit: &model.CloudInit{UserDataSize: len(udSecret), UserDataDigest: "d",
		UserDataSealed: &model.SealedValue{KeyID: pki.SealKeyID(other), Data: data}}}
	err = ts.openForHost("default", &spec)
	if err == nil || !strings.Contains(err.Error(), "spec.cloudInit.userData was sealed with seal key "+pki.SealKeyID(other)) ||
		!strings.Contains(err.Error(), pki.SealKeyID(ts.userDataKey)) {
		t.Fatalf("opening another key's copy: %v", err)
	}
	raw, _ := json.Marshal(&model.VM{Meta: model.Meta{Name: "x", Project: "default"}, Spec: spec})
	if out := ts.hostVMJSON("ha", raw); !bytes.Equal(out, raw) {
		t.Fatalf("a copy that does not open reached the host changed: %s", out)
	}
	for _, to := range []string{"other", "default"} { // another project, or the same
		err = ts.resealUserData("default", to, &spec)
		var he *httpError
		if !errors.As(err, &he) || he.body.Field != "spec.cloudInit.userData" || he.status != http.StatusConflict {
			t.Fatalf("a restore of another key's copy into project %s: %v", to, err)
		}
	}
	// the same project's copy under this server's key moves to another
	// project sealed again (bound to it), and opens there
	own := model.VMSpec{CloudInit: &model.CloudInit{UserData: udSecret}}
	if err := ts.sealSpecs("default", []*model.VMSpec{&own}, []string{"spec.cloudInit"}); err != nil {
		t.Fatal(err)
	}
	moved := own
	if err := ts.resealUserData("default", "other", &moved); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.openUserData("default", moved.CloudInit); err == nil {
		t.Fatal("a copy sealed for project other opens for project default")
	}
	if ud, err := ts.openUserData("other", moved.CloudInit); err != nil || ud != udSecret {
		t.Fatalf("the moved copy: %q %v", ud, err)
	}
	if own.CloudInit.UserDataSealed == nil || bytes.Equal(own.CloudInit.UserDataSealed.Data, moved.CloudInit.UserDataSealed.Data) {
		t.Fatal("resealing changed the source spec's CloudInit")
	}
}

func TestCutSealed(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"after others", `{"spec":{"cloudInit":{"hostname":"h","userDataDigest":"d","userDataSize":3,"userDataSealed":{"keyId":"ab","data":"AAA+/="}}},"status":{}}`,
			`{"spec":{"cloudInit":{"hostname":"h","userDataDigest":"d","userDataSize":3}},"status":{}}`},
		{"alone", `{"cloudInit":{"userDataSealed":{"keyId":"ab","data":"AA=="}}}`, `{"cloudInit":{}}`},
		{"first", `{"cloudInit":{"userDataSealed":{"keyId":"ab","data":"AA=="},"hostname":"h"}}`, `{"cloudInit":{"hostname":"h"}}`},
		{"none", `{"cloudInit":{"hostname":"userDataSealed"}}`, `{"cloudInit":{"hostname":"userDataSealed"}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := stripRawUserData([]byte(c.in))
			if string(got) != c.want {
				t.Fatalf("got  %s\nwant %s", got, c.want)
			}
		})
	}
	// a record from before sealing: the document goes, its size stays
	raw, _ := json.Marshal(&model.VM{Spec: model.VMSpec{CloudInit: &model.CloudInit{Hostname: "h", UserData: udSecret}}})
	var vm model.VM
	if err := json.Unmarshal(stripRawUserData(raw), &vm); err != nil || vm.Spec.CloudInit.UserData != "" || vm.Spec.CloudInit.UserDataSize != len(udSecret) {
		t.Fatalf("a plaintext record: %+v %v", vm.Spec.CloudInit, err)
	}
}

// User data that cannot be sealed (a server without its seal key) refuses
// the request, naming the field; it is never stored in clear.
func TestUnsealableUserDataIsRefused(t *testing.T) {
	s := &Server{}
	ci := &model.CloudInit{UserData: udSecret}
	err := s.sealUserData("p", ci, "vms[2].spec.cloudInit.userData")
	var he *httpError
	if !errors.As(err, &he) || he.status != http.StatusServiceUnavailable || he.body.Field != "vms[2].spec.cloudInit.userData" ||
		!strings.Contains(he.body.Message, "cannot be sealed") {
		t.Fatalf("sealing without a key: %v", err)
	}
	if ci.UserData != udSecret || ci.UserDataSealed != nil {
		t.Fatalf("a failed seal changed the spec: %+v", ci)
	}
}

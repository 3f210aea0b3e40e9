package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/audit"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
)

// flushAudit waits until the server's audit records are in the store.
func (ts *testServer) flushAudit() {
	ts.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.audit.Flush(ctx); err != nil {
		ts.t.Fatal(err)
	}
}

func (ts *testServer) auditList(token, query string) api.AuditList {
	ts.t.Helper()
	var l api.AuditList
	ts.mustCall(200, "GET", "/api/v1/audit?"+query, token, nil, &l)
	return l
}

func findRecord(recs []model.AuditRecord, action, object string) *model.AuditRecord {
	for i := range recs {
		if recs[i].Action == action && recs[i].Object == object {
			return &recs[i]
		}
	}
	return nil
}

// TestAPICallsAreAudited: writes (done and refused) are recorded with
// who, how and on what; reads are not; a project's members see their
// project's records only.
func TestAPICallsAreAudited(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "alpha"}, nil)
	ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "beta"}, nil)
	member, viewer, other := ts.tokenFor("alpha", model.RoleMember), ts.tokenFor("alpha", model.RoleViewer), ts.tokenFor("beta", model.RoleMember)
	ts.mustCall(201, "POST", "/api/v1/vms?project=alpha", member, vmReq("web1"), nil)
	ts.mustCall(403, "POST", "/api/v1/vms?project=alpha", viewer, vmReq("web2"), nil)
	ts.mustCall(400, "POST", "/api/v1/vms?project=alpha", member, `{"name":"web3","spec":{"vcpus":0,"memory":67108864}}`, nil)
	ts.mustCall(201, "POST", "/api/v1/vms?project=beta", other, vmReq("db1"), nil)
	ts.mustCall(200, "GET", "/api/v1/vms/web1?project=alpha", member, nil, nil)
	ts.mustCall(401, "DELETE", "/api/v1/vms/web1?project=alpha", "wrong", nil, nil)
	ts.flushAudit()

	all := ts.auditList(admin, "limit=100").Items
	ok := findRecord(all, "POST /api/v1/vms", "vm/alpha/web1")
	if ok == nil || ok.Outcome != "ok" || ok.Status != 201 || ok.Project != "alpha" || ok.Actor == nil ||
		ok.Actor.Role != model.RoleMember || ok.Actor.TokenID == "" || !strings.HasPrefix(ok.Actor.Source, "127.0.0.1:") {
		t.Fatalf("the member's create: %+v", ok)
	}
	if r := findRecord(all, "POST /api/v1/vms", "vm/alpha/web2"); r == nil || r.Outcome != "refused" || r.Status != 403 || r.Actor.Role != model.RoleViewer {
		t.Fatalf("the viewer's refused create: %+v", r)
	}
	if r := findRecord(all, "POST /api/v1/vms", "vm/alpha/web3"); r == nil || r.Status != 400 || r.Code != api.CodeInvalidField || r.Reason != "field spec.vcpus" {
		t.Fatalf("the invalid create: %+v", r)
	}
	if r := findRecord(all, "DELETE /api/v1/vms/{name}", "vm/alpha/web1"); r == nil || r.Status != 401 || r.Actor.TokenID != "" {
		t.Fatalf("the unauthenticated delete: %+v", r)
	}
	if r := findRecord(all, "GET /api/v1/vms/{name}", "vm/alpha/web1"); r != nil {
		t.Fatalf("a read was recorded: %+v", r)
	}
	for _, tok := range []string{member, viewer} {
		for _, r := range ts.auditList(tok, "").Items {
			if r.Project != "alpha" {
				t.Fatalf("a member of alpha sees a record of %q: %+v", r.Project, r)
			}
		}
	}
	for _, r := range ts.auditList(other, "").Items {
		if r.Project != "beta" {
			t.Fatalf("a member of beta sees a record of %q", r.Project)
		}
	}
	if code, _ := ts.call("GET", "/api/v1/audit?project=beta", member, nil, nil); code != 404 {
		t.Fatalf("a member of alpha asking for beta's records: %d", code)
	}
	verifyThroughAPI(t, ts)
}

// verifyThroughAPI reads the chain and head over the API and verifies
// them with the published key, as `vpool audit verify` does.
func verifyThroughAPI(t testing.TB, ts *testServer) *audit.Report {
	t.Helper()
	var hv api.AuditHeadView
	ts.mustCall(200, "GET", "/api/v1/audit/head", ts.AdminToken(), nil, &hv)
	var recs [][]byte
	for from := int64(1); from != 0; {
		var page api.AuditRecords
		ts.mustCall(200, "GET", fmt.Sprintf("/api/v1/audit/records?from=%d", from), ts.AdminToken(), nil, &page)
		for _, r := range page.Records {
			recs = append(recs, r)
		}
		from = page.Next
	}
	key, err := audit.ParsePublicKey(hv.Key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	h := hv.Head.AuditSignature
	rep := audit.Verify(audit.Input{Records: recs, Key: key, Anchor: hv.Anchor, Head: &h, Now: time.Now(), MaxHeadAge: time.Duration(hv.MaxHeadAge) * time.Second})
	if rep.Bad != nil {
		t.Fatalf("the chain served by the API: %v", rep.Bad)
	}
	return rep
}

// TestTokenScopes: scopes narrow a role; a group scope confines a token
// to the VMs of its group.
func TestTokenScopes(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: "alpha"}, nil)
	for _, name := range []string{"web1", "db1"} {
		req := vmReq(name)
		if name == "web1" {
			req.Spec.Labels = map[string]string{model.GroupLabel: "web"}
		}
		ts.mustCall(201, "POST", "/api/v1/vms?project=alpha", admin, req, nil)
	}
	scoped := func(role model.Role, project string, scopes ...string) string {
		var res api.TokenCreateResponse
		ts.mustCall(201, "POST", "/api/v1/tokens", admin, api.TokenCreateRequest{Project: project, Role: role, Scopes: scopes}, &res)
		if strings.Join(res.Token.Scopes, ",") != strings.Join(scopes, ",") {
			t.Fatalf("token scopes %v, want %v", res.Token.Scopes, scopes)
		}
		return res.Secret
	}
	readOnlyAdmin := scoped(model.RoleAdmin, "", model.ScopeRead)
	vmRead := scoped(model.RoleMember, "alpha", model.ScopeVMsRead)
	power := scoped(model.RoleMember, "alpha", model.ScopeVMsPower)
	webPower := scoped(model.RoleMember, "alpha", model.ScopeVMsPower, "group:web")
	webWrite := scoped(model.RoleMember, "alpha", model.ScopeVMsWrite, "group:web")
	tests := []struct {
		name         string
		token        string
		method, path string
		body         any
		want         int
	}{
		{"read-only admin reads hosts", readOnlyAdmin, "GET", "/api/v1/hosts", nil, 200},
		{"read-only admin reads tokens", readOnlyAdmin, "GET", "/api/v1/tokens", nil, 200},
		{"read-only admin cannot create a project", readOnlyAdmin, "POST", "/api/v1/projects", api.ProjectCreateRequest{Name: "x"}, 403},
		{"read-only admin cannot stop a VM", readOnlyAdmin, "POST", "/api/v1/vms/web1/stop?project=alpha", nil, 403},
		{"vms:read reads a VM", vmRead, "GET", "/api/v1/vms/db1?project=alpha", nil, 200},
		{"vms:read cannot read events", vmRead, "GET", "/api/v1/events?project=alpha", nil, 403},
		{"vms:read cannot stop", vmRead, "POST", "/api/v1/vms/db1/stop?project=alpha", nil, 403},
		{"vms:power stops", power, "POST", "/api/v1/vms/db1/stop?project=alpha", nil, 202},
		{"vms:power starts", power, "POST", "/api/v1/vms/db1/start?project=alpha", nil, 202},
		{"vms:power cannot delete", power, "DELETE", "/api/v1/vms/db1?project=alpha", nil, 403},
		{"vms:power cannot resize", power, "PATCH", "/api/v1/vms/db1?project=alpha", api.VMPatchRequest{VCPUs: ptr(2)}, 403},
		{"vms:power cannot open the console", power, "GET", "/api/v1/vms/db1/console?project=alpha", nil, 403},
		{"group web power stops web1", webPower, "POST", "/api/v1/vms/web1/stop?project=alpha", nil, 202},
		{"group web cannot see db1", webPower, "GET", "/api/v1/vms/db1?project=alpha", nil, 404},
		{"group web cannot stop db1", webPower, "POST", "/api/v1/vms/db1/stop?project=alpha", nil, 404},
		{"group web cannot create", webWrite, "POST", "/api/v1/vms?project=alpha", vmReq("web2"), 403},
		{"group web cannot relabel", webWrite, "PATCH", "/api/v1/vms/web1?project=alpha", api.VMPatchRequest{Labels: map[string]string{"a": "b"}}, 403},
		{"group web resizes web1", webWrite, "PATCH", "/api/v1/vms/web1?project=alpha", api.VMPatchRequest{VCPUs: ptr(2)}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, e := ts.call(tt.method, tt.path, tt.token, tt.body, nil); code != tt.want {
				t.Fatalf("%s %s = %d %+v, want %d", tt.method, tt.path, code, e, tt.want)
			}
		})
	}
	var l api.VMList
	ts.mustCall(200, "GET", "/api/v1/vms?project=alpha", webPower, nil, &l)
	if len(l.Items) != 1 || l.Items[0].Name != "web1" {
		t.Fatalf("group web lists %+v", l.Items)
	}
	for _, bad := range [][]string{{"write"}, {"group:web"}, {"vms:read", "group:a", "group:b"}, {"vms:read", "group:-x"}} {
		if code, e := ts.call("POST", "/api/v1/tokens", admin, api.TokenCreateRequest{Project: "alpha", Scopes: bad}, nil); code != 400 || !strings.HasPrefix(e.Field, "scopes") {
			t.Errorf("scopes %v: %d %+v, want 400 on scopes", bad, code, e)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestExpiredAndRevokedTokens: an expired token and a revoked one are
// refused (401).
func TestExpiredAndRevokedTokens(t *testing.T) {
	now := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	clock := &now
	ts := startServer(t, nil, func(c *Config) { c.Clock = func() time.Time { return *clock } })
	admin := ts.AdminToken()
	var short, revoked api.TokenCreateResponse
	ts.mustCall(201, "POST", "/api/v1/tokens", admin, api.TokenCreateRequest{Role: model.RoleViewer, Project: "default", TTL: "1h"}, &short)
	ts.mustCall(201, "POST", "/api/v1/tokens", admin, api.TokenCreateRequest{Role: model.RoleViewer, Project: "default"}, &revoked)
	ts.mustCall(200, "GET", "/api/v1/vms", short.Secret, nil, nil)
	ts.mustCall(204, "DELETE", "/api/v1/tokens/"+revoked.Token.ID, admin, nil, nil)
	if code, _ := ts.call("GET", "/api/v1/vms", revoked.Secret, nil, nil); code != http.StatusUnauthorized {
		t.Fatalf("a revoked token: %d", code)
	}
	*clock = now.Add(2 * time.Hour)
	if code, e := ts.call("GET", "/api/v1/vms", short.Secret, nil, nil); code != http.StatusUnauthorized || !strings.Contains(e.Message, "expired") {
		t.Fatalf("an expired token: %d %+v", code, e)
	}
}

func TestTopLevelStrings(t *testing.T) {
	tests := []struct {
		body string
		want [3]string
	}{
		{`{"name":"web1","spec":{"name":"inner","vcpus":1}}`, [3]string{"web1", "", ""}},
		{`{"spec":{"name":"inner"},"name" : "web2"}`, [3]string{"web2", "", ""}},
		{`{"prefix":"w","count":3,"spec":{"labels":{"name":"x"}}}`, [3]string{"", "", "w"}},
		{`{"vm":"db","to":"h2"}`, [3]string{"", "db", ""}},
		{`{"note":"\"name\":\"evil\"","name":"ok"}`, [3]string{"ok", "", ""}},
		{`{"name":"a\"b"}`, [3]string{"", "", ""}},
		{`{"name":1}`, [3]string{"", "", ""}},
		{`["name","x"]`, [3]string{"", "", ""}},
		{`{"name":"unterminated`, [3]string{"", "", ""}},
		{``, [3]string{"", "", ""}},
	}
	for _, tt := range tests {
		got := topLevelStrings([]byte(tt.body), "name", "vm", "prefix")
		if [3]string(got) != tt.want {
			t.Errorf("%s: %q, want %q", tt.body, got, tt.want)
		}
	}
}

// TestAuditObject: a record names what a request acted on, with the
// project for the kinds that live in one.
func TestAuditObject(t *testing.T) {
	tests := []struct {
		route   string
		path    map[string]string
		project string
		name    string // what a create's body names
		want    string
	}{
		{"POST /api/v1/vms", nil, "p1", "web1", "vm/p1/web1"},
		{"DELETE /api/v1/vms/{name}", map[string]string{"name": "web1"}, "p1", "", "vm/p1/web1"},
		{"POST /api/v1/vms/{name}/snapshots/{snapshot}/revert", map[string]string{"name": "web1", "snapshot": "s1"}, "p1", "", "vm/p1/web1/snapshots/s1"},
		{"PATCH /api/v1/hosts/{name}", map[string]string{"name": "h1"}, "", "", "host/h1"},
		{"DELETE /api/v1/tokens/{id}", map[string]string{"id": "abc"}, "", "", "token/abc"},
		{"PUT /api/v1/cluster/policy", nil, "", "", "cluster/policy"},
		{"POST /api/v1/lbs", nil, "p1", "web", "lb/p1/web"},
		{"PATCH /api/v1/lbs/{name}", map[string]string{"name": "web"}, "p1", "", "lb/p1/web"},
		{"POST /api/v1/groups", nil, "p1", "workers", "group/p1/workers"},
		{"DELETE /api/v1/groups/{name}", map[string]string{"name": "workers"}, "p1", "", "group/p1/workers"},
		{"POST /api/v1/cluster/members", nil, "", "s4", "cluster/members/s4"},
		{"DELETE /api/v1/cluster/members/{name}", map[string]string{"name": "s4"}, "", "", "cluster/members/s4"},
		{"POST /api/v1/migrations", nil, "p1", "web1", "vm/p1/web1"},
	}
	for _, tt := range tests {
		t.Run(tt.route, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			for k, v := range tt.path {
				r.SetPathValue(k, v)
			}
			if got := auditObject(tt.route, r, tt.project, tt.name); got != tt.want {
				t.Fatalf("auditObject = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestJoinsAreAudited: a host's join (a certificate issued) and a
// server's (the cluster's secrets handed over) are audit records, done
// or refused, naming the host or server and the address, never the
// token.
func TestJoinsAreAudited(t *testing.T) {
	fm := newFakeMembers()
	ts := startServer(t, nil, func(c *Config) { c.Members = fm })
	jt, err := ts.NewJoinToken(context.Background(), time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, code := joinWith(t, ts, jt.Token, "h1"); code != 200 {
		t.Fatalf("host join: %d", code)
	}
	if _, code := joinWith(t, ts, jt.Token, "h2"); code != 401 {
		t.Fatalf("a used-up token joined: %d", code)
	}
	s2 := ts.memberToken("s2")
	if code := serverJoin(t, ts, s2, "s2", nil); code != 200 {
		t.Fatalf("server join: %d", code)
	}
	ts.flushAudit()
	all := ts.auditList(ts.AdminToken(), "limit=100").Items
	tests := []struct {
		route, object, outcome string
		status                 int
	}{
		{"POST /agent/v1/join", "host/h1", "ok", 200},
		{"POST /agent/v1/join", "host/h2", "refused", 401},
		{"POST /agent/v1/members/join", "cluster/members/s2", "ok", 200},
	}
	for _, tt := range tests {
		r := findRecord(all, tt.route, tt.object)
		if r == nil || r.Outcome != tt.outcome || r.Status != tt.status || r.Actor == nil || !strings.HasPrefix(r.Actor.Source, "127.0.0.1:") {
			t.Errorf("%s %s: %+v", tt.route, tt.object, r)
		}
	}
	for _, r := range all {
		b, _ := json.Marshal(r)
		for _, tok := range []string{jt.Token, s2} {
			_, sec, err := pki.ParseJoinToken(tok)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), sec) {
				t.Fatalf("record %d holds a join token: %s", r.Seq, b)
			}
		}
	}
	verifyThroughAPI(t, ts)
}

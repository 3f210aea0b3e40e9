package server

import (
	"encoding/json"
	"io"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/pki"
)

// The route walk: every operation of the OpenAPI document, with every
// kind of caller, answers the status this table says — and the table
// must name every operation, so a new route cannot be added without
// saying who may call it. It also checks that the most privileged
// caller gets the documented success status (unless the entry says why
// not) and that no tenant's answer carries host-internal detail.

type role string

const (
	rNone    role = "no token"
	rAdmin   role = "admin"
	rMember  role = "member of alpha"
	rViewer  role = "viewer of alpha"
	rOther   role = "member of beta"
	rMetrics role = "metrics token"
)

var userRoles = []role{rNone, rMetrics, rOther, rViewer, rMember, rAdmin}

func (r role) secret(s *Server) string {
	return map[role]string{rAdmin: s.AdminToken(), rMember: memberSecret, rViewer: viewerSecret, rOther: otherSecret, rMetrics: scrapeSecret}[r]
}

// tenant reports whether r is a tenant (shown redacted answers).
func (r role) tenant() bool { return r == rMember || r == rViewer || r == rOther }

// walk is one operation's request and the status each role gets.
type walk struct {
	path, body string
	want       map[role]int
	// exempt says why the privileged caller does not get the documented
	// success status in this walk.
	exempt string
}

func statuses(none, metrics, other, viewer, member, admin int) map[role]int {
	return map[role]int{rNone: none, rMetrics: metrics, rOther: other, rViewer: viewer, rMember: member, rAdmin: admin}
}

// Who may call: every authenticated user; cluster admins only; readers
// of project alpha; writers in project alpha.
func anyUser(code int) map[role]int   { return statuses(401, 403, code, code, code, code) }
func adminOnly(code int) map[role]int { return statuses(401, 403, 403, 403, 403, code) }
func alphaRead(code int) map[role]int { return statuses(401, 403, 404, code, code, code) }
func alphaWrite(code int) map[role]int {
	return statuses(401, 403, 404, 403, code, code)
}

const walkSpec = `{"vcpus":1,"memory":67108864}`

// userWalks is the user API's table: "METHOD /path/pattern" → request.
var userWalks = map[string]walk{
	"GET /api/v1/openapi.json":    {path: "/api/v1/openapi.json", want: statuses(200, 200, 200, 200, 200, 200)},
	"GET /api/v1/cluster":         {path: "/api/v1/cluster", want: anyUser(200)},
	"GET /api/v1/cluster/policy":  {path: "/api/v1/cluster/policy", want: anyUser(200)},
	"PUT /api/v1/cluster/policy":  {path: "/api/v1/cluster/policy", body: `{"ratios":{"cpu":4},"strategy":"binpack"}`, want: adminOnly(200)},
	"GET /api/v1/ha":              {path: "/api/v1/ha", want: adminOnly(200)},
	"GET /api/v1/cluster/members": {path: "/api/v1/cluster/members", want: adminOnly(200)},
	"POST /api/v1/cluster/members": {path: "/api/v1/cluster/members", body: `{"name":"s4"}`, want: adminOnly(409),
		exempt: "the fixture's store is in memory, without etcd members (internal/devenv and test/ha add servers)"},
	"DELETE /api/v1/cluster/members/{name}": {path: "/api/v1/cluster/members/s4", want: adminOnly(409),
		exempt: "the fixture's store is in memory, without etcd members (test/ha removes one)"},
	"GET /api/v1/projects":        {path: "/api/v1/projects", want: anyUser(200)},
	"POST /api/v1/projects":       {path: "/api/v1/projects", body: `{"name":"gamma"}`, want: adminOnly(201)},
	"GET /api/v1/projects/{name}": {path: "/api/v1/projects/alpha", want: alphaRead(200)},
	"PATCH /api/v1/projects/{name}": {path: "/api/v1/projects/alpha", body: `{"description":"x"}`,
		want: statuses(401, 403, 404, 403, 403, 200)},
	"DELETE /api/v1/projects/{name}": {path: "/api/v1/projects/empty", want: statuses(401, 403, 404, 404, 404, 204)},

	"GET /api/v1/vms":                       {path: "/api/v1/vms?project=alpha", want: alphaRead(200)},
	"POST /api/v1/vms":                      {path: "/api/v1/vms?project=alpha", body: `{"name":"new","spec":` + walkSpec + `}`, want: alphaWrite(201)},
	"POST /api/v1/vms:batch":                {path: "/api/v1/vms:batch?project=alpha", body: `{"prefix":"w","count":2,"spec":` + walkSpec + `}`, want: alphaWrite(201)},
	"GET /api/v1/vms/{name}":                {path: "/api/v1/vms/vm1?project=alpha", want: alphaRead(200)},
	"PATCH /api/v1/vms/{name}":              {path: "/api/v1/vms/vm1?project=alpha", body: `{"labels":{"a":"b"}}`, want: alphaWrite(200)},
	"DELETE /api/v1/vms/{name}":             {path: "/api/v1/vms/vm1?project=alpha", want: alphaWrite(202)},
	"POST /api/v1/vms/{name}/start":         {path: "/api/v1/vms/vm1/start?project=alpha", want: alphaWrite(202)},
	"POST /api/v1/vms/{name}/stop":          {path: "/api/v1/vms/vm1/stop?project=alpha", want: alphaWrite(202)},
	"POST /api/v1/vms/{name}/restart":       {path: "/api/v1/vms/vm1/restart?project=alpha", want: alphaWrite(202)},
	"PATCH /api/v1/vms/{name}/disks/{disk}": {path: "/api/v1/vms/vm1/disks/data?project=alpha", body: `{"size":2147483648}`, want: alphaWrite(202)},

	"GET /api/v1/hosts":                 {path: "/api/v1/hosts", want: anyUser(200)},
	"GET /api/v1/hosts/{name}":          {path: "/api/v1/hosts/h1", want: anyUser(200)},
	"PATCH /api/v1/hosts/{name}":        {path: "/api/v1/hosts/h1", body: `{"cordoned":true}`, want: adminOnly(200)},
	"DELETE /api/v1/hosts/{name}":       {path: "/api/v1/hosts/h3", want: adminOnly(204)},
	"POST /api/v1/hosts/join-tokens":    {path: "/api/v1/hosts/join-tokens", want: adminOnly(201)},
	"POST /api/v1/hosts/{name}/drain":   {path: "/api/v1/hosts/h1/drain", want: adminOnly(202)},
	"POST /api/v1/hosts/{name}/rekey":   {path: "/api/v1/hosts/h1/rekey", want: adminOnly(201)},
	"POST /api/v1/hosts/{name}/undrain": {path: "/api/v1/hosts/h1/undrain", want: adminOnly(200)},

	"GET /api/v1/images":           {path: "/api/v1/images", want: anyUser(200)},
	"GET /api/v1/images/{name}":    {path: "/api/v1/images/img1", want: anyUser(200)},
	"POST /api/v1/images":          {path: "/api/v1/images", body: `{"name":"img2","kernelUrl":"http://127.0.0.1:1/vmlinux"}`, want: adminOnly(202)},
	"DELETE /api/v1/images/{name}": {path: "/api/v1/images/img3", want: adminOnly(204)},

	"GET /api/v1/tokens":         {path: "/api/v1/tokens", want: adminOnly(200)},
	"POST /api/v1/tokens":        {path: "/api/v1/tokens", body: `{"project":"alpha","role":"viewer"}`, want: adminOnly(201)},
	"DELETE /api/v1/tokens/{id}": {path: "/api/v1/tokens/tok1", want: adminOnly(204)},

	"GET /api/v1/events": {path: "/api/v1/events?project=alpha", want: alphaRead(200)},

	"GET /api/v1/audit":              {path: "/api/v1/audit?project=alpha", want: alphaRead(200)},
	"GET /api/v1/audit/records":      {path: "/api/v1/audit/records?from=1", want: adminOnly(200)},
	"GET /api/v1/audit/head":         {path: "/api/v1/audit/head", want: adminOnly(200)},
	"GET /api/v1/audit/key":          {path: "/api/v1/audit/key", want: anyUser(200)},
	"GET /api/v1/cluster/metering":   {path: "/api/v1/cluster/metering", want: anyUser(200)},
	"PATCH /api/v1/cluster/metering": {path: "/api/v1/cluster/metering", body: `{"sitesGPerKWh":{"eu":56}}`, want: adminOnly(200)},
	"GET /api/v1/cluster/history":    {path: "/api/v1/cluster/history?points=10", want: adminOnly(200)},
	"GET /api/v1/compliance":         {path: "/api/v1/compliance?project=alpha", want: alphaRead(200)},
	"GET /api/v1/usage":              {path: "/api/v1/usage?project=alpha&vms=true", want: alphaRead(200)},

	"GET /api/v1/migrations":              {path: "/api/v1/migrations?project=alpha", want: alphaRead(200)},
	"POST /api/v1/migrations":             {path: "/api/v1/migrations?project=alpha", body: `{"vm":"vm1"}`, want: adminOnly(201)},
	"GET /api/v1/migrations/{id}":         {path: "/api/v1/migrations/m1", want: alphaRead(200)},
	"POST /api/v1/migrations/{id}/cancel": {path: "/api/v1/migrations/m1/cancel", want: adminOnly(202)},

	"GET /api/v1/cluster/balance":   {path: "/api/v1/cluster/balance", want: anyUser(200)},
	"PATCH /api/v1/cluster/balance": {path: "/api/v1/cluster/balance", body: `{"pue":1.3}`, want: adminOnly(200)},
	"GET /api/v1/balance/plan":      {path: "/api/v1/balance/plan", want: adminOnly(200)},
	"GET /api/v1/cluster/energy":    {path: "/api/v1/cluster/energy?vms=true", want: anyUser(200)},

	"GET /api/v1/vms/{name}/snapshots":                    {path: "/api/v1/vms/vm1/snapshots?project=alpha", want: alphaRead(200)},
	"POST /api/v1/vms/{name}/snapshots":                   {path: "/api/v1/vms/vm1/snapshots?project=alpha", body: `{"name":"s2"}`, want: alphaWrite(202)},
	"GET /api/v1/vms/{name}/snapshots/{snapshot}":         {path: "/api/v1/vms/vm1/snapshots/s1?project=alpha", want: alphaRead(200)},
	"POST /api/v1/vms/{name}/snapshots/{snapshot}/revert": {path: "/api/v1/vms/vm1/snapshots/s1/revert?project=alpha", want: alphaWrite(202)},
	"DELETE /api/v1/vms/{name}/snapshots/{snapshot}":      {path: "/api/v1/vms/vm1/snapshots/s1?project=alpha", want: alphaWrite(202)},
	"POST /api/v1/vms/{name}/disks":                       {path: "/api/v1/vms/vm1/disks?project=alpha", body: `{"size":1048576}`, want: alphaWrite(202)},
	"DELETE /api/v1/vms/{name}/disks/{disk}":              {path: "/api/v1/vms/vm1/disks/data?project=alpha", want: alphaWrite(202)},
	"GET /api/v1/vms/{name}/console": {path: "/api/v1/vms/vm2/console?project=alpha", want: statuses(401, 403, 404, 403, 409, 409),
		exempt: "vm2 is on no host: a console needs an agent (internal/devenv TestVMOperations/console attaches)"},
	"GET /api/v1/vms/{name}/console/log": {path: "/api/v1/vms/vm2/console/log?project=alpha", want: statuses(401, 403, 404, 409, 409, 409),
		exempt: "vm2 is on no host: a console log needs an agent"},

	"GET /api/v1/networks":                          {path: "/api/v1/networks?project=alpha", want: alphaRead(200)},
	"POST /api/v1/networks":                         {path: "/api/v1/networks?project=alpha", body: `{"name":"net2","spec":{"subnet":"10.11.0.0/24"}}`, want: alphaWrite(201)},
	"GET /api/v1/networks/{name}":                   {path: "/api/v1/networks/net1?project=alpha", want: alphaRead(200)},
	"DELETE /api/v1/networks/{name}":                {path: "/api/v1/networks/netfree?project=alpha", want: alphaWrite(204)},
	"GET /api/v1/networks/{name}/addresses":         {path: "/api/v1/networks/net1/addresses?project=alpha", want: alphaRead(200)},
	"POST /api/v1/networks/{name}/addresses":        {path: "/api/v1/networks/net1/addresses?project=alpha", body: `{"owner":"lb/web"}`, want: alphaWrite(201)},
	"DELETE /api/v1/networks/{name}/addresses/{ip}": {path: "/api/v1/networks/net1/addresses/10.10.0.100?project=alpha", want: alphaWrite(204)},
	"GET /api/v1/secgroups":                         {path: "/api/v1/secgroups?project=alpha", want: alphaRead(200)},
	"POST /api/v1/secgroups":                        {path: "/api/v1/secgroups?project=alpha", body: `{"name":"sg2"}`, want: alphaWrite(201)},
	"GET /api/v1/secgroups/{name}":                  {path: "/api/v1/secgroups/sg1?project=alpha", want: alphaRead(200)},
	"DELETE /api/v1/secgroups/{name}":               {path: "/api/v1/secgroups/sgfree?project=alpha", want: alphaWrite(204)},
	"POST /api/v1/secgroups/{name}/rules": {path: "/api/v1/secgroups/sg1/rules?project=alpha", body: `{"direction":"ingress","protocol":"tcp","portMin":443}`,
		want: alphaWrite(201)},
	"DELETE /api/v1/secgroups/{name}/rules/{id}": {path: "/api/v1/secgroups/sg1/rules/r1?project=alpha", want: alphaWrite(200)},
	"POST /api/v1/vms/{name}/nics":               {path: "/api/v1/vms/vm1/nics?project=alpha", body: `{"network":"net1"}`, want: alphaWrite(202)},
	"PATCH /api/v1/vms/{name}/nics/{nic}":        {path: "/api/v1/vms/vm2/nics/nic0?project=alpha", body: `{"qos":{"ingressKbps":1000}}`, want: alphaWrite(202)},
	"DELETE /api/v1/vms/{name}/nics/{nic}":       {path: "/api/v1/vms/vm2/nics/nic0?project=alpha", want: alphaWrite(202)},

	"GET /api/v1/lbs":           {path: "/api/v1/lbs?project=alpha", want: alphaRead(200)},
	"POST /api/v1/lbs":          {path: "/api/v1/lbs?project=alpha", body: `{"name":"lb2","spec":{"network":"net1","listen":443,"members":{"vms":["vm2"]}}}`, want: alphaWrite(201)},
	"GET /api/v1/lbs/{name}":    {path: "/api/v1/lbs/lb1?project=alpha", want: alphaRead(200)},
	"PATCH /api/v1/lbs/{name}":  {path: "/api/v1/lbs/lb1?project=alpha", body: `{"algorithm":"leastconn"}`, want: alphaWrite(200)},
	"DELETE /api/v1/lbs/{name}": {path: "/api/v1/lbs/lbfree?project=alpha", want: alphaWrite(202)},
	"GET /api/v1/groups":        {path: "/api/v1/groups?project=alpha", want: alphaRead(200)},
	"POST /api/v1/groups": {path: "/api/v1/groups?project=alpha", body: `{"name":"g2","spec":{"template":` + walkSpec + `,"min":1,"max":3}}`,
		want: alphaWrite(201)},
	"GET /api/v1/groups/{name}":    {path: "/api/v1/groups/g1?project=alpha", want: alphaRead(200)},
	"PATCH /api/v1/groups/{name}":  {path: "/api/v1/groups/g1?project=alpha", body: `{"max":4}`, want: alphaWrite(200)},
	"DELETE /api/v1/groups/{name}": {path: "/api/v1/groups/gfree?project=alpha", want: alphaWrite(202)},

	"GET /api/v1/backup/repos": {path: "/api/v1/backup/repos", want: anyUser(200)},
	"POST /api/v1/backup/repos": {path: "/api/v1/backup/repos", body: `{"name":"r1","path":"/elsewhere/r1","key":"x"}`, want: adminOnly(400),
		exempt: "a repository must lie in the server's backup directories and come with its key file (TestBackupAPI registers one)"},
	"GET /api/v1/backup/repos/{name}":         {path: "/api/v1/backup/repos/nosuch", want: anyUser(404), exempt: backupExempt},
	"DELETE /api/v1/backup/repos/{name}":      {path: "/api/v1/backup/repos/nosuch", want: adminOnly(404), exempt: backupExempt},
	"GET /api/v1/backup/repos/{name}/catalog": {path: "/api/v1/backup/repos/nosuch/catalog", want: adminOnly(404), exempt: backupExempt},
	"GET /api/v1/backup/policy":               {path: "/api/v1/backup/policy?project=alpha", want: alphaRead(404), exempt: backupExempt},
	"PUT /api/v1/backup/policy":               {path: "/api/v1/backup/policy?project=alpha", body: `{"repo":"nosuch","every":"1h"}`, want: alphaWrite(400), exempt: backupExempt},
	"GET /api/v1/backups":                     {path: "/api/v1/backups?project=alpha", want: alphaRead(200)},
	"POST /api/v1/backups":                    {path: "/api/v1/backups?project=alpha", body: `{"vm":"vm1","repo":"nosuch"}`, want: alphaWrite(400), exempt: backupExempt},
	"GET /api/v1/backups/{id}":                {path: "/api/v1/backups/nosuch?project=alpha", want: alphaRead(404), exempt: backupExempt},
	"DELETE /api/v1/backups/{id}":             {path: "/api/v1/backups/nosuch?project=alpha", want: alphaWrite(404), exempt: backupExempt},
	"POST /api/v1/backups/{id}/restore":       {path: "/api/v1/backups/nosuch/restore?project=alpha", body: `{"as":"vm9"}`, want: alphaWrite(404), exempt: backupExempt},
	"GET /api/v1/restores":                    {path: "/api/v1/restores?project=alpha", want: alphaRead(200)},
	"GET /api/v1/restores/{id}":               {path: "/api/v1/restores/nosuch?project=alpha", want: alphaRead(404), exempt: backupExempt},
	"GET /api/v1/backup/tasks":                {path: "/api/v1/backup/tasks", want: adminOnly(200)},
	"POST /api/v1/backup/tasks":               {path: "/api/v1/backup/tasks", body: `{"kind":"verify","repo":"nosuch"}`, want: adminOnly(400), exempt: backupExempt},
	"GET /api/v1/backup/tasks/{id}":           {path: "/api/v1/backup/tasks/nosuch", want: adminOnly(404), exempt: backupExempt},
	"POST /api/v1/dr/failover":                {path: "/api/v1/dr/failover", body: `{"project":"alpha","repo":"nosuch"}`, want: adminOnly(400), exempt: backupExempt},
}

// backupExempt: the fixture holds no backup repository; the backup
// routes' successes are walked by internal/devenv TestBackupEndToEnd.
const backupExempt = "the fixture holds no backup repository (internal/devenv TestBackupEndToEnd calls these with one)"

// openAPIOperations reads the committed document: "METHOD /path" → the
// documented success status.
func openAPIOperations(t *testing.T) map[string]int {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]struct {
			Responses map[string]any `json:"responses"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	ops := map[string]int{}
	for path, methods := range doc.Paths {
		for m, op := range methods {
			for code := range op.Responses {
				if n, err := strconv.Atoi(code); err == nil {
					ops[strings.ToUpper(m)+" "+path] = n
				}
			}
		}
	}
	return ops
}

// TestEveryRouteEveryRole walks the user API: each operation with each
// role, on a fresh copy of the fixture cluster.
func TestEveryRouteEveryRole(t *testing.T) {
	ops := openAPIOperations(t)
	var keys []string
	for k := range ops {
		if strings.HasPrefix(k, "GET /agent/") || strings.Contains(k, " /agent/") {
			if _, ok := agentWalks[k]; !ok {
				t.Errorf("%s is in openapi.json but not in agentWalks: say who may call it", k)
			}
			continue
		}
		if _, ok := userWalks[k]; !ok {
			t.Errorf("%s is in openapi.json but not in userWalks: say who may call it", k)
			continue
		}
		keys = append(keys, k)
	}
	for k := range userWalks {
		if _, ok := ops[k]; !ok {
			t.Errorf("userWalks has %s, which openapi.json does not document", k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		w := userWalks[k]
		t.Run(k, func(t *testing.T) {
			checkWalk(t, k, w, ops[k])
			for _, r := range userRoles {
				code, body := userCall(t, newFixtureServer(t), k, w, r)
				if code != w.want[r] {
					t.Errorf("%s as %s = %d %s; want %d", k, r, code, cut(body), w.want[r])
				}
				checkAnswer(t, k, r, code, body)
			}
		})
	}
}

// checkWalk checks the entry itself: every role has a status, and the
// most privileged one gets the documented success unless exempt.
func checkWalk(t *testing.T, key string, w walk, documented int) {
	t.Helper()
	for _, r := range userRoles {
		if _, ok := w.want[r]; !ok {
			t.Fatalf("%s: no status for %s", key, r)
		}
	}
	if got := w.want[rAdmin]; got != documented && w.exempt == "" {
		t.Errorf("%s: the admin is expected to get %d but openapi.json documents %d", key, got, documented)
	}
}

func userCall(t *testing.T, s *Server, key string, w walk, r role) (int, []byte) {
	t.Helper()
	method, _, _ := strings.Cut(key, " ")
	return callWithBody(s, method, w.path, r.secret(s), w.body)
}

// callWith serves one request in process.
func callWith(s *Server, method, path, secret string) (int, []byte) {
	return callWithBody(s, method, path, secret, "")
}

func callWithBody(s *Server, method, path, secret, body string) (int, []byte) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	out, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, out
}

// checkAnswer: an error is an api.Error with a code and a message; no
// tenant is shown host-internal detail.
func checkAnswer(t *testing.T, key string, r role, code int, body []byte) {
	t.Helper()
	if code >= 300 {
		var e api.Error
		if err := json.Unmarshal(body, &e); err != nil || e.Code == "" || e.Message == "" {
			t.Errorf("%s as %s: %d with body %s, want an api.Error", key, r, code, cut(body))
		}
	}
	if code >= 500 {
		t.Errorf("%s as %s: %d %s", key, r, code, cut(body))
	}
	// The one-time key of a migration's target is a secret from every
	// user, cluster admins included: only the agents get it.
	if strings.Contains(string(body), "SECRETKEY") {
		t.Errorf("%s as %s: the answer shows a migration's one-time key: %s", key, r, cut(body))
	}
	if r.tenant() {
		for _, m := range secretMarkers {
			if strings.Contains(string(body), m) {
				t.Errorf("%s as %s: the answer shows %q: %s", key, r, m, cut(body))
			}
		}
	}
}

func cut(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// Agent protocol roles.
const (
	aNone     role = "no certificate"
	aBearer   role = "admin bearer, no certificate"
	aStranger role = "certificate of h3"
	aHost     role = "certificate of h1"
)

var agentRoles = []role{aNone, aBearer, aStranger, aHost}

func agentStatuses(stranger, host int) map[role]int {
	return map[role]int{aNone: 401, aBearer: 401, aStranger: stranger, aHost: host}
}

// migrationCSRBody is a migration certificate request with a real CSR.
var migrationCSRBody = func() string {
	_, csr, err := pki.NewKeyAndCSR("anyone")
	if err != nil {
		panic(err)
	}
	b, _ := json.Marshal(api.MigrationCertRequest{CSRPEM: string(csr)})
	return string(b)
}()

var agentWalks = map[string]walk{
	// every joined host gets a migration certificate of its own
	"POST /agent/v1/migration-cert": {path: "/agent/v1/migration-cert", body: migrationCSRBody, want: agentStatuses(200, 200)},
	"POST /agent/v1/join": {path: "/agent/v1/join", body: `{"host":"h9","csr":""}`, want: agentStatuses(401, 401),
		exempt: "join takes a join token, which no role here holds (TestJoinRefusals and the agent tests join)"},
	"POST /agent/v1/members/join": {path: "/agent/v1/members/join", body: `{"name":"s4","peerURL":"https://127.0.0.1:2380"}`, want: agentStatuses(401, 401),
		exempt: "a server join takes a server join token, which no role here holds (internal/devenv and test/ha join servers)"},
	"PUT /agent/v1/heartbeat": {path: "/agent/v1/heartbeat", body: `{"host":"h1","capacity":{"cpus":16,"memory":68719476736,"disk":0},"driver":"sim"}`,
		want: agentStatuses(403, 200)},
	"GET /agent/v1/assignments":                     {path: "/agent/v1/assignments?wait=0s", want: agentStatuses(200, 200)},
	"PUT /agent/v1/vms/{project}/{name}/status":     {path: "/agent/v1/vms/alpha/vm1/status", body: `{"phase":"failed","error":"x"}`, want: agentStatuses(409, 200)},
	"GET /agent/v1/vms/{project}/{name}/owner":      {path: "/agent/v1/vms/alpha/vm1/owner", want: agentStatuses(409, 200)},
	"GET /agent/v1/migrations":                      {path: "/agent/v1/migrations?wait=0s", want: agentStatuses(200, 200)},
	"PUT /agent/v1/migrations/{id}/report":          {path: "/agent/v1/migrations/m1/report", body: `{"progress":{"bytesSent":1}}`, want: agentStatuses(403, 200)},
	"GET /agent/v1/power":                           {path: "/agent/v1/power", want: agentStatuses(200, 200)},
	"PUT /agent/v1/snapshots/{project}/{vm}/{name}": {path: "/agent/v1/snapshots/alpha/vm1/s1", body: `{"phase":"ready"}`, want: agentStatuses(409, 200)},
	"GET /agent/v1/consoles":                        {path: "/agent/v1/consoles?wait=0s", want: agentStatuses(200, 200)},
	"GET /agent/v1/images/{name}":                   {path: "/agent/v1/images/img1", want: agentStatuses(200, 200)},
	"GET /agent/v1/images/{name}/files/{sha256}": {path: "/agent/v1/images/img1/files/" + strings.Repeat("0", 64), want: agentStatuses(503, 503),
		exempt: "the fixture's image names another server's pool (the image tests fetch real files)"},
	"GET /agent/v1/networks":  {path: "/agent/v1/networks?wait=0s", want: agentStatuses(200, 200)},
	"GET /agent/v1/balancers": {path: "/agent/v1/balancers?wait=0s", want: agentStatuses(200, 200)},
	"PUT /agent/v1/balancers/{project}/{name}/status": {path: "/agent/v1/balancers/alpha/lb1/status",
		body: `{"running":true,"members":{"vm2":{"health":"up","sessions":0}}}`, want: agentStatuses(409, 200)},
	"GET /agent/v1/consoles/{id}": {path: "/agent/v1/consoles/nosuch", want: agentStatuses(404, 404),
		exempt: "no console session is open (the console tests dial in)"},
	"GET /agent/v1/backups": {path: "/agent/v1/backups?wait=0s", want: agentStatuses(200, 200)},
	"PUT /agent/v1/backups/{project}/{name}": {path: "/agent/v1/backups/alpha/nosuch", body: `{"phase":"running"}`,
		want: agentStatuses(404, 404), exempt: backupExempt},
	"PUT /agent/v1/restores/{project}/{name}": {path: "/agent/v1/restores/alpha/nosuch", body: `{"phase":"restoring"}`,
		want: agentStatuses(404, 404), exempt: backupExempt},
}

// TestEveryAgentRouteEveryRole walks the agent protocol over real mutual
// TLS: no certificate, a user's bearer token, another host's
// certificate and the right host's.
func TestEveryAgentRouteEveryRole(t *testing.T) {
	ops := openAPIOperations(t)
	ts := startServer(t, nil, func(c *Config) { c.Placer = walkPlanner{} })
	h1, h3 := joinAgent(t, ts, "h1"), joinAgent(t, ts, "h3")
	seedFixture(t, ts.Server)
	plain := pinnedClient(ts.CAHash())
	var keys []string
	for k := range agentWalks {
		if _, ok := ops[k]; !ok {
			t.Errorf("agentWalks has %s, which openapi.json does not document", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w := agentWalks[k]
		if w.want[aHost] != ops[k] && w.exempt == "" {
			t.Errorf("%s: the host is expected to get %d but openapi.json documents %d", k, w.want[aHost], ops[k])
		}
		method, _, _ := strings.Cut(k, " ")
		for _, r := range agentRoles {
			var body any
			if w.body != "" {
				body = json.RawMessage(w.body)
			}
			var code int
			switch r {
			case aNone:
				code = agentDo(t, plain, method, "https://"+ts.AgentAddr()+w.path, "", body, nil)
			case aBearer:
				code = agentDo(t, plain, method, "https://"+ts.AgentAddr()+w.path, ts.AdminToken(), body, nil)
			case aStranger:
				code = h3.do(method, w.path, body, nil)
			case aHost:
				code = h1.do(method, w.path, body, nil)
			}
			if code != w.want[r] {
				t.Errorf("%s as %s = %d, want %d", k, r, code, w.want[r])
			}
		}
	}
}

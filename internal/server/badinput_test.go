package server

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vpool/vpool/internal/store"
)

// snapshot is every stored key with its revision.
func snapshot(t *testing.T, st store.Store) map[string]int64 {
	t.Helper()
	kvs, _, err := st.List(context.Background(), store.Root)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, kv := range kvs {
		if strings.HasPrefix(kv.Key, store.AuditPrefix) {
			continue // refusals are audited: that is the one write they make
		}
		if strings.HasPrefix(kv.Key, store.ServersPrefix) {
			continue // the server's own record, written by Run on its own (CI saw it land between two snapshots)
		}
		out[kv.Key] = kv.ModRev
	}
	return out
}

const okSpec = `"spec":{"vcpus":1,"memory":67108864}`

func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	ts := startServer(t, nil)
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/vms", admin, vmReq("exists"), nil)
	big := `{"name":"a",` + okSpec + `,"x":"` + strings.Repeat("a", MaxBody) + `"}`
	tests := []struct {
		name, method, path, body string
		status                   int
		code, field              string
	}{
		{"unknown top field", "POST", "/api/v1/vms", `{"name":"a",` + okSpec + `,"colour":"red"}`, 400, "invalid_field", "colour"},
		{"unknown spec field", "POST", "/api/v1/vms", `{"name":"a","spec":{"vcpus":1,"memory":67108864,"cpu":2}}`, 400, "invalid_field", "spec.cpu"},
		{"negative vcpus", "POST", "/api/v1/vms", `{"name":"a","spec":{"vcpus":-1,"memory":67108864}}`, 400, "invalid_field", "spec.vcpus"},
		{"absurd vcpus", "POST", "/api/v1/vms", `{"name":"a","spec":{"vcpus":100000,"memory":67108864}}`, 400, "invalid_field", "spec.vcpus"},
		{"vcpus overflow", "POST", "/api/v1/vms", `{"name":"a","spec":{"vcpus":1e30,"memory":67108864}}`, 400, "invalid_field", "spec.vcpus"},
		{"vcpus as string", "POST", "/api/v1/vms", `{"name":"a","spec":{"vcpus":"2","memory":67108864}}`, 400, "invalid_field", "spec.vcpus"},
		{"absurd memory", "POST", "/api/v1/vms", `{"name":"a","spec":{"vcpus":1,"memory":1152921504606846976}}`, 400, "invalid_field", "spec.memory"},
		{"negative memory", "POST", "/api/v1/vms", `{"name":"a","spec":{"vcpus":1,"memory":-5}}`, 400, "invalid_field", "spec.memory"},
		{"bad unit", "POST", "/api/v1/vms", `{"name":"a","spec":{"vcpus":1,"memory":"1XB"}}`, 400, "invalid_field", "spec.memory"},
		{"unit as string", "POST", "/api/v1/vms", `{"name":"a","spec":{"vcpus":1,"memory":"2GiB"}}`, 400, "invalid_field", "spec.memory"},
		{"fractional memory", "POST", "/api/v1/vms", `{"name":"a","spec":{"vcpus":1,"memory":1.5}}`, 400, "invalid_field", "spec.memory"},
		{"negative disk", "POST", "/api/v1/vms", `{"name":"a","spec":{"vcpus":1,"memory":67108864,"disks":[{"size":-1}]}}`, 400, "invalid_field", "spec.disks[0].size"},
		{"bad label", "POST", "/api/v1/vms", `{"name":"a","spec":{"vcpus":1,"memory":67108864,"labels":{"bad key":"x"}}}`, 400, "invalid_field", "spec.labels"},
		{"name not DNS", "POST", "/api/v1/vms", `{"name":"Web_1",` + okSpec + `}`, 400, "invalid_field", "name"},
		{"name too long", "POST", "/api/v1/vms", `{"name":"` + strings.Repeat("a", 64) + `",` + okSpec + `}`, 400, "invalid_field", "name"},
		{"name missing", "POST", "/api/v1/vms", `{` + okSpec + `}`, 400, "invalid_field", "name"},
		{"name taken", "POST", "/api/v1/vms", `{"name":"exists",` + okSpec + `}`, 409, "conflict", ""},
		{"two values", "POST", "/api/v1/vms", `{"name":"a",` + okSpec + `}{}`, 400, "bad_request", "body"},
		{"trailing junk", "POST", "/api/v1/vms", `{"name":"a",` + okSpec + `} x`, 400, "bad_request", "body"},
		{"malformed", "POST", "/api/v1/vms", `{"name":`, 400, "bad_request", "body"},
		{"empty body", "POST", "/api/v1/vms", ``, 400, "bad_request", "body"},
		{"array body", "POST", "/api/v1/vms", `[]`, 400, "bad_request", "body"},
		{"null body", "POST", "/api/v1/vms", `null`, 400, "bad_request", "body"},
		{"too big", "POST", "/api/v1/vms", big, 413, "bad_request", "body"},
		{"missing project", "POST", "/api/v1/vms?project=ghost", `{"name":"a",` + okSpec + `}`, 404, "not_found", ""},
		{"batch count zero", "POST", "/api/v1/vms:batch", `{"prefix":"w","count":0,` + okSpec + `}`, 400, "invalid_field", "count"},
		{"batch count huge", "POST", "/api/v1/vms:batch", `{"prefix":"w","count":100000,` + okSpec + `}`, 400, "invalid_field", "count"},
		{"batch both forms", "POST", "/api/v1/vms:batch", `{"prefix":"w","count":1,"vms":[{"name":"a",` + okSpec + `}]}`, 400, "invalid_field", "vms"},
		{"batch item field", "POST", "/api/v1/vms:batch", `{"vms":[{"name":"a",` + okSpec + `},{"name":"b","spec":{"vcpus":0,"memory":67108864}}]}`, 400, "invalid_field", "vms[1].spec.vcpus"},
		{"batch bad prefix", "POST", "/api/v1/vms:batch", `{"prefix":"W","count":1,` + okSpec + `}`, 400, "invalid_field", "prefix"},
		{"batch half taken", "POST", "/api/v1/vms:batch", `{"vms":[{"name":"new1",` + okSpec + `},{"name":"exists",` + okSpec + `}]}`, 409, "conflict", ""},
		{"patch negative", "PATCH", "/api/v1/vms/exists", `{"vcpus":-1}`, 400, "invalid_field", "vcpus"},
		{"patch unknown", "PATCH", "/api/v1/vms/exists", `{"cpus":2}`, 400, "invalid_field", "cpus"},
		{"patch bad memory", "PATCH", "/api/v1/vms/exists", `{"memory":"lots"}`, 400, "invalid_field", "memory"},
		{"patch bad controls", "PATCH", "/api/v1/vms/exists", `{"controls":{"cpuLimitMilli":5}}`, 400, "invalid_field", "controls.cpuLimitMilli"},
		{"patch missing VM", "PATCH", "/api/v1/vms/ghost", `{"vcpus":2}`, 404, "not_found", ""},
		{"project bad name", "POST", "/api/v1/projects", `{"name":"UPPER"}`, 400, "invalid_field", "name"},
		{"project negative quota", "POST", "/api/v1/projects", `{"name":"q","quota":{"vms":-1}}`, 400, "invalid_field", "quota.vms"},
		{"project quota type", "POST", "/api/v1/projects", `{"name":"q","quota":{"memory":"1XB"}}`, 400, "invalid_field", "quota.memory"},
		{"project exists", "POST", "/api/v1/projects", `{"name":"default"}`, 409, "conflict", ""},
		{"project patch quota", "PATCH", "/api/v1/projects/default", `{"quota":{"vcpus":-2}}`, 400, "invalid_field", "quota.vcpus"},
		{"token bad role", "POST", "/api/v1/tokens", `{"project":"default","role":"god"}`, 400, "invalid_field", "role"},
		{"token bad ttl", "POST", "/api/v1/tokens", `{"project":"default","ttl":"forever"}`, 400, "invalid_field", "ttl"},
		{"token no project", "POST", "/api/v1/tokens", `{"role":"member"}`, 400, "invalid_field", "project"},
		{"token ghost project", "POST", "/api/v1/tokens", `{"project":"ghost"}`, 400, "invalid_field", "project"},
		{"join bad ttl", "POST", "/api/v1/hosts/join-tokens", `{"ttl":"-1h"}`, 400, "invalid_field", "ttl"},
		{"policy bad ratio", "PUT", "/api/v1/cluster/policy", `{"ratios":{"memory":5},"strategy":"binpack"}`, 400, "invalid_field", "ratios.memory"},
		{"policy bad strategy", "PUT", "/api/v1/cluster/policy", `{"ratios":{},"strategy":"random"}`, 400, "invalid_field", "strategy"},
		{"events bad since", "GET", "/api/v1/events?since=-1", ``, 400, "invalid_field", "since"},
		{"events bad limit", "GET", "/api/v1/events?limit=0", ``, 400, "invalid_field", "limit"},
	}
	before := snapshot(t, ts.st)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, e := ts.call(tt.method, tt.path, admin, tt.body, nil)
			if code != tt.status || e.Code != tt.code || e.Field != tt.field {
				t.Fatalf("%s %s %.80s = %d %+v; want %d %s field %q", tt.method, tt.path, tt.body, code, e, tt.status, tt.code, tt.field)
			}
			if e.Message == "" {
				t.Fatal("error without a message")
			}
		})
	}
	if diff := cmp.Diff(before, snapshot(t, ts.st)); diff != "" {
		t.Fatalf("refused requests changed the store (-before +after):\n%s", diff)
	}
}

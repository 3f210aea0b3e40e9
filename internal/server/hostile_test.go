package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// Issue 10: the hostile requests of the security review, each sent with
// a project member's token where a member may send it (an admin's
// otherwise). Every one is refused with 400 naming the field, nothing is
// stored, and the server lives on.

const minInt64 = "-9223372036854775808"

func specWith(extra string) string {
	return `{"vcpus":1,"memory":67108864` + extra + `}`
}

func createBody(extra string) string { return `{"name":"a","spec":` + specWith(extra) + `}` }

func manyJSON(n int, item func(i int) string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = item(i)
	}
	return strings.Join(parts, ",")
}

func TestHostileRequestsRefused(t *testing.T) {
	ts := startServer(t, nil, func(c *Config) { c.Placer = fakePlacer{} })
	admin := ts.AdminToken()
	ts.mustCall(201, "POST", "/api/v1/vms", admin, vmReq("exists"), nil)
	if _, err := ts.Repo().UpsertHost(context.Background(), "h1", func(h *model.Host, _ bool) error {
		h.State, h.Pools = model.HostReady, []model.StoragePoolRef{{Name: "fast", Tier: "ssd"}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	member := ts.tokenFor("default", model.RoleMember)
	long := strings.Repeat("a", 10000)
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID4vpeQQweL+lBLlerWd0ofdQmqkSUOcmk1KIBv/AccB me"
	badCurve := "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= x" // well formed, not on the curve
	tests := []struct {
		name, method, path, token, body string
		field                           string
	}{
		// 1. sizes of -1<<63 everywhere a size is taken
		{"create memory", "POST", "/api/v1/vms", member, `{"name":"a","spec":{"vcpus":1,"memory":` + minInt64 + `}}`, "spec.memory"},
		{"dry-run memory", "POST", "/api/v1/vms", member, `{"name":"a","dryRun":true,"spec":{"vcpus":1,"memory":` + minInt64 + `}}`, "spec.memory"},
		{"create disk size", "POST", "/api/v1/vms", member, createBody(`,"disks":[{"size":` + minInt64 + `}]`), "spec.disks[0].size"},
		{"create reservation", "POST", "/api/v1/vms", member, createBody(`,"controls":{"memoryReservation":` + minInt64 + `}`), "spec.controls.memoryReservation"},
		{"create limit", "POST", "/api/v1/vms", member, createBody(`,"controls":{"memoryLimit":` + minInt64 + `}`), "spec.controls.memoryLimit"},
		{"batch prefix memory", "POST", "/api/v1/vms:batch", member, `{"prefix":"w","count":2,"spec":{"vcpus":1,"memory":` + minInt64 + `}}`, "spec.memory"},
		{"batch item memory", "POST", "/api/v1/vms:batch", member, `{"vms":[{"name":"b","spec":{"vcpus":1,"memory":` + minInt64 + `}}]}`, "vms[0].spec.memory"},
		{"batch dry-run memory", "POST", "/api/v1/vms:batch", member, `{"dryRun":true,"prefix":"w","count":2,"spec":{"vcpus":1,"memory":` + minInt64 + `}}`, "spec.memory"},
		{"patch memory", "PATCH", "/api/v1/vms/exists", member, `{"memory":` + minInt64 + `}`, "memory"},
		{"patch reservation", "PATCH", "/api/v1/vms/exists", member, `{"controls":{"memoryReservation":` + minInt64 + `}}`, "controls.memoryReservation"},
		{"patch limit", "PATCH", "/api/v1/vms/exists", member, `{"controls":{"memoryLimit":` + minInt64 + `}}`, "controls.memoryLimit"},
		{"disk add size", "POST", "/api/v1/vms/exists/disks", member, `{"size":` + minInt64 + `}`, "size"},
		// 2. values that reach the QEMU command line
		{"mac injection", "POST", "/api/v1/vms", member, createBody(`,"nics":[{"mac":"52:54:00:12:34:56,romfile=/etc/shadow"}]`), "spec.nics[0].mac"},
		{"mac quote", "POST", "/api/v1/vms", member, createBody(`,"nics":[{"mac":"52:54:00:12:34:5\"6"}]`), "spec.nics[0].mac"},
		{"mac NUL", "POST", "/api/v1/vms", member, createBody(`,"nics":[{"mac":"52:54:00:12:34:56\u0000"}]`), "spec.nics[0].mac"},
		{"disk name comma", "POST", "/api/v1/vms", member, createBody(`,"disks":[{"size":1048576,"name":"a,b"}]`), "spec.disks[0].name"},
		// 3. traversal, huge values, counts, unknown pools
		{"image traversal", "POST", "/api/v1/vms", member, createBody(`,"image":"../../../../etc/shadow"`), "spec.image"},
		{"image huge", "POST", "/api/v1/vms", member, createBody(`,"image":"` + long + `"`), "spec.image"},
		{"pool traversal", "POST", "/api/v1/vms", member, createBody(`,"disks":[{"size":1048576,"pool":"../../etc"}]`), "spec.disks[0].pool"},
		{"pool huge", "POST", "/api/v1/vms", member, createBody(`,"disks":[{"size":1048576,"pool":"` + long + `"}]`), "spec.disks[0].pool"},
		{"tier huge", "POST", "/api/v1/vms", member, createBody(`,"disks":[{"size":1048576,"tier":"` + long + `"}]`), "spec.disks[0].tier"},
		{"network traversal", "POST", "/api/v1/vms", member, createBody(`,"nics":[{"network":"../br0"}]`), "spec.nics[0].network"},
		{"network huge", "POST", "/api/v1/vms", member, createBody(`,"nics":[{"network":"` + long + `"}]`), "spec.nics[0].network"},
		{"1000 NICs", "POST", "/api/v1/vms", member, createBody(`,"nics":[` + manyJSON(1000, func(int) string { return `{}` }) + `]`), "spec.nics"},
		{"5000 disks", "POST", "/api/v1/vms", member, createBody(`,"disks":[` + manyJSON(5000, func(int) string { return `{"size":1048576}` }) + `]`), "spec.disks"},
		{"20000 labels", "POST", "/api/v1/vms", member, createBody(`,"labels":{` + manyJSON(20000, func(i int) string { return fmt.Sprintf(`"k%d":"v"`, i) }) + `}`), "spec.labels"},
		{"20000 labels by patch", "PATCH", "/api/v1/vms/exists", member, `{"labels":{` + manyJSON(20000, func(i int) string { return fmt.Sprintf(`"k%d":"v"`, i) }) + `}}`, "labels"},
		{"unknown pool", "POST", "/api/v1/vms", member, createBody(`,"disks":[{"size":1048576,"pool":"nowhere"}]`), "spec.disks[0].pool"},
		{"unknown tier", "POST", "/api/v1/vms", member, createBody(`,"disks":[{"size":1048576,"tier":"nvme"}]`), "spec.disks[0].tier"},
		{"pool in other tier", "POST", "/api/v1/vms", member, createBody(`,"disks":[{"size":1048576,"pool":"fast","tier":"hdd"}]`), "spec.disks[0].tier"},
		{"unknown pool in batch", "POST", "/api/v1/vms:batch", member, `{"vms":[{"name":"b","spec":` + specWith(`,"disks":[{"size":1048576},{"size":1048576,"pool":"nowhere"}]`) + `}]}`, "vms[0].spec.disks[1].pool"},
		{"unknown pool on dry run", "POST", "/api/v1/vms", member, `{"name":"a","dryRun":true,"spec":` + specWith(`,"disks":[{"size":1048576,"pool":"nowhere"}]`) + `}`, "spec.disks[0].pool"},
		{"disk add unknown pool", "POST", "/api/v1/vms/exists/disks", member, `{"size":1048576,"pool":"nowhere"}`, "pool"},
		{"disk add traversal", "POST", "/api/v1/vms/exists/disks", member, `{"size":1048576,"pool":"../x"}`, "pool"},
		// 4. null bodies
		{"null policy", "PUT", "/api/v1/cluster/policy", admin, `null`, "body"},
		{"null balance", "PATCH", "/api/v1/cluster/balance", admin, `null`, "body"},
		{"null project patch", "PATCH", "/api/v1/projects/default", admin, `null`, "body"},
		{"null VM patch", "PATCH", "/api/v1/vms/exists", member, `null`, "body"},
		{"null host patch", "PATCH", "/api/v1/hosts/h1", admin, ` null `, "body"},
		{"null join token", "POST", "/api/v1/hosts/join-tokens", admin, `null`, "body"},
		{"null token", "POST", "/api/v1/tokens", admin, `null`, "body"},
		{"null drain", "POST", "/api/v1/hosts/h1/drain", admin, `null`, "body"},
		{"null disk add", "POST", "/api/v1/vms/exists/disks", member, `null`, "body"},
		{"null snapshot", "POST", "/api/v1/vms/exists/snapshots", member, `null`, "body"},
		{"null batch", "POST", "/api/v1/vms:batch", member, `null`, "body"},
		{"null project", "POST", "/api/v1/projects", admin, `null`, "body"},
		{"null migration", "POST", "/api/v1/migrations", admin, `null`, "body"},
		// 5. durations, ratios, weights, counts
		{"interval max int64", "PATCH", "/api/v1/cluster/balance", admin, `{"intervalSeconds":9223372036854775807}`, "intervalSeconds"},
		{"pue 9.2e18", "PATCH", "/api/v1/cluster/balance", admin, `{"pue":9.2e18}`, "energy.pue"},
		{"grid 1e308", "PATCH", "/api/v1/cluster/balance", admin, `{"gridIntensityGPerKWh":1e308}`, "energy.gridIntensityGPerKWh"},
		{"moves max int64", "PATCH", "/api/v1/cluster/balance", admin, `{"maxMovesPerRound":9223372036854775807}`, "maxMovesPerRound"},
		{"idle max int64", "PATCH", "/api/v1/cluster/balance", admin, `{"idleSeconds":9223372036854775807}`, "power.idleSeconds"},
		{"weight 1e308", "PUT", "/api/v1/cluster/policy", admin, `{"ratios":{},"strategy":"binpack","weights":{"binpack":1e308}}`, "weights.binpack"},
		{"weight key huge", "PUT", "/api/v1/cluster/policy", admin, `{"ratios":{},"strategy":"binpack","weights":{"` + long + `":1}}`, "weights"},
		{"host ratio 1e308", "PATCH", "/api/v1/hosts/h1", admin, `{"ratios":{"cpu":1e308}}`, "ratios.cpu"},
		{"quota max int64", "PATCH", "/api/v1/projects/default", admin, `{"quota":{"memory":9223372036854775807}}`, "quota.memory"},
		{"quota vms max", "POST", "/api/v1/projects", admin, `{"name":"q","quota":{"vms":9223372036854775807}}`, "quota.vms"},
		{"description huge", "POST", "/api/v1/projects", admin, `{"name":"q","description":"` + long + `"}`, "description"},
		{"description patch huge", "PATCH", "/api/v1/projects/default", admin, `{"description":"` + long + `"}`, "description"},
		{"iops max int64", "POST", "/api/v1/vms", member, createBody(`,"controls":{"diskIops":9223372036854775807}`), "spec.controls.diskIops"},
		{"bandwidth max int64", "POST", "/api/v1/migrations", admin, `{"vm":"exists","bandwidthBps":9223372036854775807}`, "bandwidthBps"},
		{"host labels 20000", "PATCH", "/api/v1/hosts/h1", admin, `{"labels":{` + manyJSON(20000, func(i int) string { return fmt.Sprintf(`"k%d":"v"`, i) }) + `}}`, "labels"},
		// 6. SSH keys are parsed
		{"ssh key shell", "POST", "/api/v1/vms", member, createBody(`,"cloudInit":{"sshKeys":["x;rm -rf /"]}`), "spec.cloudInit.sshKeys[0]"},
		{"ssh key bad point", "POST", "/api/v1/vms", member, createBody(`,"cloudInit":{"sshKeys":["` + key + `","` + badCurve + `"]}`), "spec.cloudInit.sshKeys[1]"},
		// 8. full JSON paths
		{"unknown in disk", "POST", "/api/v1/vms", member, createBody(`,"disks":[{"size":1048576},{"size":1048576,"z":1}]`), "spec.disks[1].z"},
		{"unknown in placement", "POST", "/api/v1/vms", member, createBody(`,"placement":{"zone":"a"}`), "spec.placement.zone"},
		{"unknown in batch item", "POST", "/api/v1/vms:batch", member, `{"vms":[{"name":"b","spec":` + specWith(`,"z":1`) + `}]}`, "vms[0].spec.z"},
		{"unknown in quota", "PATCH", "/api/v1/projects/default", admin, `{"quota":{"gpus":1}}`, "quota.gpus"},
		{"type in second disk", "POST", "/api/v1/vms", member, createBody(`,"disks":[{"size":1048576},{"size":"10GiB"}]`), "spec.disks[1].size"},
		{"type in weight", "PUT", "/api/v1/cluster/policy", admin, `{"ratios":{},"strategy":"binpack","weights":{"binpack":"x"}}`, "weights.binpack"},
	}
	before := snapshot(t, ts.st)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, e := ts.call(tt.method, tt.path, tt.token, tt.body, nil)
			if code != 400 || e.Field != tt.field {
				t.Fatalf("%s %s %.120s = %d %+v; want 400 on %s", tt.method, tt.path, tt.body, code, e, tt.field)
			}
			if e.Message == "" || len(e.Message) > 600 {
				t.Fatalf("message of %d bytes: %.200s", len(e.Message), e.Message)
			}
		})
	}
	if diff := cmp.Diff(before, snapshot(t, ts.st)); diff != "" {
		t.Fatalf("refused requests changed the store (-before +after):\n%s", diff)
	}
	// The server is alive and the pools that exist are taken.
	ts.mustCall(201, "POST", "/api/v1/vms", member, createBody(`,"disks":[{"size":1048576,"pool":"fast","tier":"ssd"}],"nics":[{"mac":"52:54:00:12:34:56","network":"lan"}],"cloudInit":{"sshKeys":["`+key+`"]}`), nil)
	ts.mustCall(202, "POST", "/api/v1/vms/exists/disks", member, api.DiskAddRequest{Size: model.MiB, Pool: "fast"}, nil)
	ts.mustCall(201, "POST", "/api/v1/hosts/join-tokens", admin, ``, nil)
}

package server

import (
	"encoding/json"
	"slices"
	"strings"
)

// The seed corpus of FuzzHTTP: the hostile values of the security review
// in every place the API takes a value. go test runs every seed.

type fuzzSeed struct {
	route        string
	role         uint8 // index into userRoles
	param, query string
	body         string
}

const (
	seedMember = 4
	seedAdmin  = 5
)

// hostileNumbers are JSON numbers (and non-numbers) for integer, size
// and float fields.
var hostileNumbers = []string{
	"-9223372036854775808", "9223372036854775807", "-9223372036854775809", "18446744073709551616",
	"1e308", "-1e308", "1e309", "-0", "0.5", "-1", "0", "2147483648", `"NaN"`, `"Infinity"`, `"-1"`, "null", "true", "[]", "{}",
}

// hostileStrings are strings for names, MACs, paths and free text.
var hostileStrings = []string{
	"a,b", "52:54:00:12:34:56,romfile=/etc/shadow", `a"b`, "a\x00b", "\x00", "../../../etc/passwd", "..", "/etc/shadow",
	".", "a b", "a\nb", "é", "A", "-", "a-", strings.Repeat("a", 64), strings.Repeat("a", 10000), "", "x;rm -rf /", "$(reboot)",
	"52:54:00:12:34:56", "01:00:5e:00:00:01", "vm1", "default", "fast", "ssd",
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func fuzzSeeds() []fuzzSeed {
	var out []fuzzSeed
	add := func(route string, role uint8, body string) {
		out = append(out, fuzzSeed{route: route, role: role, body: body})
	}
	// numbers in every numeric field of the create, patch and settings bodies
	for _, n := range hostileNumbers {
		for _, f := range []string{`"vcpus":%s,"memory":67108864`, `"vcpus":1,"memory":%s`, `"vcpus":1,"memory":67108864,"disks":[{"size":%s}]`,
			`"vcpus":1,"memory":67108864,"controls":{"memoryReservation":%s}`, `"vcpus":1,"memory":67108864,"controls":{"memoryLimit":%s}`,
			`"vcpus":1,"memory":67108864,"controls":{"diskIops":%s,"diskBps":%s}`, `"vcpus":1,"memory":67108864,"controls":{"cpuShares":%s}`,
			`"vcpus":2,"memory":67108864,"controls":{"cpuReservationMilli":%s,"cpuLimitMilli":%s}`, `"vcpus":1,"memory":67108864,"haPriority":%s`,
			`"vcpus":1,"memory":67108864,"placement":{"affinityGroup":"g","maxPerHost":%s}`,
			`"vcpus":1,"memory":67108864,"migration":{"downtimeLimitMs":%s}`, `"vcpus":1,"memory":67108864,"restartNonce":%s`} {
			spec := "{" + strings.ReplaceAll(f, "%s", n) + "}"
			add("POST /api/v1/vms", seedMember, `{"name":"n1","spec":`+spec+`}`)
			add("POST /api/v1/vms:batch", seedMember, `{"prefix":"b","count":2,"spec":`+spec+`}`)
		}
		add("POST /api/v1/vms", seedMember, `{"name":"n1","dryRun":true,"spec":{"vcpus":1,"memory":`+n+`}}`)
		add("POST /api/v1/vms:batch", seedMember, `{"prefix":"b","count":`+n+`,"spec":{"vcpus":1,"memory":67108864}}`)
		for _, f := range []string{`{"vcpus":%s}`, `{"memory":%s}`, `{"controls":{"memoryLimit":%s}}`, `{"restart":%s}`} {
			add("PATCH /api/v1/vms/{name}", seedMember, strings.ReplaceAll(f, "%s", n))
		}
		add("POST /api/v1/vms/{name}/disks", seedMember, `{"size":`+n+`}`)
		for _, f := range []string{"intervalSeconds", "maxMovesPerRound", "maxMovesPerHost", "minHostsOn", "idleSeconds", "headroomPercent", "gridIntensityGPerKWh", "pue"} {
			add("PATCH /api/v1/cluster/balance", seedAdmin, `{"`+f+`":`+n+`}`)
		}
		add("PUT /api/v1/cluster/policy", seedAdmin, `{"ratios":{"cpu":`+n+`,"memory":1,"disk":1},"strategy":"binpack","weights":{"binpack":`+n+`}}`)
		add("PATCH /api/v1/projects/{name}", seedAdmin, `{"quota":{"vcpus":`+n+`,"memory":`+n+`,"disk":`+n+`,"vms":`+n+`}}`)
		add("POST /api/v1/projects", seedAdmin, `{"name":"q1","quota":{"memory":`+n+`}}`)
		add("POST /api/v1/migrations", seedAdmin, `{"vm":"vm1","bandwidthBps":`+n+`,"downtimeLimitMs":`+n+`}`)
		add("POST /api/v1/hosts/{name}/drain", seedAdmin, `{"maxConcurrent":`+n+`}`)
		add("PATCH /api/v1/hosts/{name}", seedAdmin, `{"ratios":{"cpu":`+n+`}}`)
	}
	// strings in every string field
	for _, s := range hostileStrings {
		q := jsonString(s)
		for _, f := range []string{`"image":%s`, `"nics":[{"mac":%s}]`, `"nics":[{"network":%s}]`, `"disks":[{"size":1048576,"pool":%s}]`,
			`"disks":[{"size":1048576,"tier":%s}]`, `"disks":[{"size":1048576,"name":%s}]`, `"labels":{%s:%s}`, `"power":%s`,
			`"placement":{"host":%s,"isolationDomain":%s}`, `"placement":{"affinity":%s,"affinityGroup":%s}`,
			`"placement":{"requiredLabels":{"k":%s}}`, `"cloudInit":{"hostname":%s}`, `"cloudInit":{"sshKeys":[%s]}`, `"cloudInit":{"userData":%s}`} {
			spec := `{"vcpus":1,"memory":67108864,` + strings.ReplaceAll(f, "%s", q) + "}"
			add("POST /api/v1/vms", seedMember, `{"name":"n2","spec":`+spec+`}`)
		}
		add("POST /api/v1/vms", seedMember, `{"name":`+q+`,"spec":{"vcpus":1,"memory":67108864}}`)
		add("POST /api/v1/vms:batch", seedMember, `{"prefix":`+q+`,"count":3,"spec":{"vcpus":1,"memory":67108864}}`)
		add("PATCH /api/v1/vms/{name}", seedMember, `{"labels":{`+q+`:`+q+`}}`)
		add("POST /api/v1/vms/{name}/disks", seedMember, `{"size":1048576,"name":`+q+`,"pool":`+q+`}`)
		add("POST /api/v1/vms/{name}/snapshots", seedMember, `{"name":`+q+`}`)
		add("POST /api/v1/projects", seedAdmin, `{"name":`+q+`,"description":`+q+`}`)
		add("PATCH /api/v1/projects/{name}", seedAdmin, `{"description":`+q+`}`)
		add("POST /api/v1/tokens", seedAdmin, `{"project":`+q+`,"role":`+q+`,"ttl":`+q+`}`)
		add("POST /api/v1/hosts/join-tokens", seedAdmin, `{"ttl":`+q+`}`)
		add("PATCH /api/v1/hosts/{name}", seedAdmin, `{"labels":{`+q+`:`+q+`},"state":`+q+`}`)
		add("PATCH /api/v1/cluster/balance", seedAdmin, `{"mode":`+q+`,"policy":`+q+`}`)
		add("PUT /api/v1/cluster/policy", seedAdmin, `{"ratios":{},"strategy":`+q+`,"weights":{`+q+`:1}}`)
		add("POST /api/v1/migrations", seedAdmin, `{"vm":`+q+`,"to":`+q+`}`)
		// the same strings as path parameters and queries
		for _, route := range []string{"GET /api/v1/vms/{name}", "DELETE /api/v1/vms/{name}/disks/{disk}", "GET /api/v1/projects/{name}",
			"DELETE /api/v1/tokens/{id}", "GET /api/v1/migrations/{id}", "GET /api/v1/hosts/{name}"} {
			out = append(out, fuzzSeed{route: route, role: seedMember, param: s}, fuzzSeed{route: route, role: seedAdmin, param: s})
		}
		for _, qs := range []string{"project=", "since=", "limit=", "all-projects=", "vms="} {
			out = append(out, fuzzSeed{route: "GET /api/v1/vms", role: seedMember, query: qs + s},
				fuzzSeed{route: "GET /api/v1/events", role: seedAdmin, query: qs + s},
				fuzzSeed{route: "GET /api/v1/cluster/energy", role: seedMember, query: qs + s})
		}
	}
	// bodies that are not objects, on every route that takes a body
	for _, route := range []string{"POST /api/v1/vms", "POST /api/v1/vms:batch", "PATCH /api/v1/vms/{name}", "PUT /api/v1/cluster/policy",
		"PATCH /api/v1/cluster/balance", "POST /api/v1/projects", "PATCH /api/v1/projects/{name}", "PATCH /api/v1/hosts/{name}",
		"POST /api/v1/hosts/join-tokens", "POST /api/v1/tokens", "POST /api/v1/migrations", "POST /api/v1/hosts/{name}/drain",
		"POST /api/v1/vms/{name}/disks", "POST /api/v1/vms/{name}/snapshots"} {
		for _, b := range []string{"null", " null ", "", "[]", `"x"`, "1", "{}", "{", "{}{}", `{"z":1}`, `{"spec":{"z":1}}`,
			strings.Repeat("[", 10000), strings.Repeat(`{"a":`, 5000), "\x00", `{"name":"a\u0000"}`} {
			add(route, seedAdmin, b)
			add(route, seedMember, b)
		}
	}
	// every route once with each role and no body
	for _, route := range []string{"GET /api/v1/cluster", "GET /api/v1/hosts", "GET /api/v1/vms", "GET /api/v1/events",
		"GET /api/v1/migrations", "GET /api/v1/cluster/energy", "POST /api/v1/vms/{name}/stop", "DELETE /api/v1/vms/{name}"} {
		for role := range uint8(len(userRoles)) {
			out = append(out, fuzzSeed{route: route, role: role})
		}
	}
	return slices.Concat(out, networkFuzzSeeds(), balancerFuzzSeeds(), auditFuzzSeeds())
}

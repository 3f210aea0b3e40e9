package server

// auditFuzzSeeds are FuzzHTTP's seeds for the audit routes and token
// scopes: hostile values in every query they read and in scopes.
func auditFuzzSeeds() []fuzzSeed {
	var out []fuzzSeed
	for _, s := range append(append([]string{}, hostileStrings...), hostileNumbers...) {
		for _, qs := range []string{"limit=", "before=", "after=", "kind=", "object=", "project=", "all-projects="} {
			out = append(out, fuzzSeed{route: "GET /api/v1/audit", role: seedMember, query: qs + s},
				fuzzSeed{route: "GET /api/v1/audit", role: seedAdmin, query: qs + s})
		}
		out = append(out, fuzzSeed{route: "GET /api/v1/cluster/history", role: seedAdmin, query: "points=" + s},
			fuzzSeed{route: "GET /api/v1/cluster/history", role: seedAdmin, query: "host=" + s})
		for _, qs := range []string{"project=", "all-projects=", "breaches="} {
			out = append(out, fuzzSeed{route: "GET /api/v1/compliance", role: seedMember, query: qs + s},
				fuzzSeed{route: "GET /api/v1/compliance", role: seedAdmin, query: qs + s})
		}
		for _, qs := range []string{"from=", "to=", "project=", "vms=", "all-projects="} {
			out = append(out, fuzzSeed{route: "GET /api/v1/usage", role: seedMember, query: qs + s},
				fuzzSeed{route: "GET /api/v1/usage", role: seedAdmin, query: qs + s})
		}
		for _, qs := range []string{"from=", "limit="} {
			out = append(out, fuzzSeed{route: "GET /api/v1/audit/records", role: seedAdmin, query: qs + s})
		}
		q := jsonString(s)
		out = append(out, fuzzSeed{route: "PATCH /api/v1/cluster/metering", role: seedAdmin, body: `{"sitesGPerKWh":{` + q + `:56}}`})
		out = append(out, fuzzSeed{route: "POST /api/v1/tokens", role: seedAdmin, body: `{"project":"alpha","scopes":[` + q + `]}`},
			fuzzSeed{route: "POST /api/v1/tokens", role: seedAdmin, body: `{"project":"alpha","scopes":["vms:read","group:` + s + `"]}`})
	}
	for _, b := range []string{`{"scopes":null}`, `{"scopes":{}}`, `{"scopes":[1]}`, `{"project":"alpha","scopes":["group:g"]}`,
		`{"project":"alpha","scopes":["read","read","read","read","read","read","read","read","read"]}`} {
		out = append(out, fuzzSeed{route: "POST /api/v1/tokens", role: seedAdmin, body: b})
	}
	for _, n := range hostileNumbers {
		out = append(out, fuzzSeed{route: "PATCH /api/v1/cluster/metering", role: seedAdmin, body: `{"sitesGPerKWh":{"eu":` + n + `}}`})
	}
	for _, b := range []string{"null", "{}", `{"sitesGPerKWh":null}`, `{"sitesGPerKWh":[]}`, `{"x":1}`} {
		out = append(out, fuzzSeed{route: "PATCH /api/v1/cluster/metering", role: seedAdmin, body: b})
	}
	for role := range uint8(len(userRoles)) {
		for _, route := range []string{"GET /api/v1/audit", "GET /api/v1/audit/records", "GET /api/v1/audit/head", "GET /api/v1/audit/key", "GET /api/v1/usage", "GET /api/v1/compliance"} {
			out = append(out, fuzzSeed{route: route, role: role})
		}
	}
	return out
}

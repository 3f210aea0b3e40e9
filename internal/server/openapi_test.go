package server

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
)

var update = flag.Bool("update", false, "rewrite internal/api/openapi.json from the route tables and wire types")

// schemaGen builds JSON Schemas (OpenAPI 3.1) from Go types by reflection.
type schemaGen struct {
	defs map[string]any
}

var (
	timeType  = reflect.TypeOf(time.Time{})
	bytesType = reflect.TypeOf(model.Bytes(0))
	rawType   = reflect.TypeOf(json.RawMessage(nil))
	enums     = map[reflect.Type][]string{
		reflect.TypeOf(model.Phase("")):      {"pending", "scheduling", "creating", "running", "stopping", "stopped", "failed", "deleting", "paused"},
		reflect.TypeOf(model.PowerState("")): {"running", "stopped"},
		reflect.TypeOf(model.Role("")):       {"admin", "member", "viewer", "agent", "metrics"},
		reflect.TypeOf(model.HostState("")):  {"ready", "maintenance", "standby", "down", "fenced"},
	}
)

func (g *schemaGen) schema(t reflect.Type) map[string]any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == timeType:
		return map[string]any{"type": "string", "format": "date-time"}
	case t == bytesType:
		return map[string]any{"type": "integer", "format": "int64", "minimum": 0, "description": "a size in bytes"}
	case t == rawType:
		return map[string]any{"description": "any JSON value, as stored"}
	}
	if e, ok := enums[t]; ok {
		return map[string]any{"type": "string", "enum": e}
	}
	switch t.Kind() {
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int64, reflect.Int32:
		return map[string]any{"type": "integer", "format": "int64"}
	case reflect.Float64, reflect.Float32:
		return map[string]any{"type": "number"}
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 { // encoding/json: base64
			return map[string]any{"type": "string", "contentEncoding": "base64"}
		}
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": g.schema(t.Elem())}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		name := t.Name()
		if name == "" {
			return g.object(t)
		}
		if _, ok := g.defs[name]; !ok {
			g.defs[name] = nil // break cycles
			g.defs[name] = g.object(t)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	panic("openapi: unsupported type " + t.String())
}

func (g *schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	g.fields(t, props)
	return map[string]any{"type": "object", "properties": props, "additionalProperties": false}
}

func (g *schemaGen) fields(t reflect.Type, props map[string]any) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && name == "" {
			g.fields(f.Type, props)
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = g.schema(f.Type)
	}
}

var pathParam = regexp.MustCompile(`\{([a-z]+)\}`)

var queryParams = map[string]map[string]any{
	"project":      {"type": "string", "description": "project name (default: the token's project, else default)"},
	"all-projects": {"type": "boolean", "description": "every project's VMs, migrations or events (admin)"},
	"since":        {"type": "integer", "description": "only events after this store revision"},
	"limit":        {"type": "integer", "description": "at most this many (latest) events"},
	"follow":       {"type": "boolean", "description": "stream events as NDJSON until the client goes away"},
	"after":        {"type": "integer", "description": "answer when a VM of this host changed after this revision"},
	"wait":         {"type": "string", "description": "longest wait of a long poll, e.g. 30s (at most 60s)"},
	"delta":        {"type": "boolean", "description": "answer only the VMs changed after the revision (and those that left), and do not wake for the host's own status reports"},
	"vm":           {"type": "string", "description": "only this VM's"},
	"cluster":      {"type": "boolean", "description": "the cluster's policy instead of a project's (admin)"},
	"min-revision": {"type": "integer", "description": "answer from the server's cache once it holds this revision (one from an earlier answer, such as your last write's), without a linearizable read of the store: sees every write up to it"},
}

// generateOpenAPI renders the document from the endpoint tables.
func generateOpenAPI(s *Server) ([]byte, error) {
	g := &schemaGen{defs: map[string]any{}}
	g.schema(reflect.TypeOf(api.Error{}))
	summaries := map[string]string{}
	for _, r := range append(append([]api.Route{}, api.Routes...), api.AgentRoutes...) {
		summaries[r.Method+" "+r.Path] = r.Summary
	}
	paths := map[string]map[string]any{}
	type op struct {
		method, path string
		req, resp    any
		status       int
		query        []string
		security     []any
		tag          string
	}
	var ops []op
	for _, e := range s.endpoints() {
		sec := []any{map[string]any{"bearer": []any{}}}
		if e.public {
			sec = []any{}
		}
		ops = append(ops, op{e.method, e.path, e.req, e.resp, e.status, e.query, sec, "user"})
	}
	for _, e := range s.agentEndpoints() {
		sec := []any{map[string]any{"agentCertificate": []any{}}}
		if !e.needCert {
			sec = []any{map[string]any{"joinToken": []any{}}}
		}
		ops = append(ops, op{e.method, e.path, e.req, e.resp, e.status, e.query, sec, "agent"})
	}
	for _, o := range ops {
		key := o.method + " " + o.path
		params := []any{}
		for _, m := range pathParam.FindAllStringSubmatch(o.path, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
		}
		for _, q := range o.query {
			params = append(params, map[string]any{"name": q, "in": "query", "schema": queryParams[q]})
		}
		resp := map[string]any{"description": "success"}
		if o.resp != nil {
			content := map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(o.resp))}}
			if key == "GET /api/v1/events" {
				content["application/x-ndjson"] = map[string]any{"schema": g.schema(reflect.TypeOf(model.Event{}))}
			}
			resp["content"] = content
		}
		operation := map[string]any{
			"operationId": strings.ToLower(o.method) + strings.NewReplacer("/api/v1", "", "/agent/v1", "Agent", "/", "_", "{", "", "}", "", ":", "_", ".", "_", "-", "_").Replace(o.path),
			"summary":     summaries[key],
			"tags":        []any{o.tag},
			"security":    o.security,
			"parameters":  params,
			"responses": map[string]any{
				itoa(int64(o.status)): resp,
				"default": map[string]any{"description": "error", "content": map[string]any{"application/json": map[string]any{
					"schema": map[string]any{"$ref": "#/components/schemas/Error"}}}},
			},
		}
		if o.req != nil {
			operation["requestBody"] = map[string]any{"required": o.method != "POST" || !(strings.HasSuffix(o.path, "join-tokens") || strings.HasSuffix(o.path, "/drain")),
				"content": map[string]any{"application/json": map[string]any{"schema": g.schema(reflect.TypeOf(o.req))}}}
		}
		if paths[o.path] == nil {
			paths[o.path] = map[string]any{}
		}
		paths[o.path][strings.ToLower(o.method)] = operation
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": "vpool API", "version": "v1",
			"description": "The vpool control plane. /api/v1 is the user API (bearer tokens). /agent/v1 is the host agent protocol, " +
				"served only on the agent listener over mutual TLS. Errors are {code, message, field}. " +
				"Dry-run creates answer DryRunResponse (a list of them for a batch) with status 200."},
		"servers": []any{map[string]any{"url": "http://127.0.0.1:8440", "description": "user API"},
			map[string]any{"url": "https://127.0.0.1:8441", "description": "agent listener (mutual TLS)"}},
		"paths": paths,
		"components": map[string]any{
			"schemas": g.defs,
			"securitySchemes": map[string]any{
				"bearer":           map[string]any{"type": "http", "scheme": "bearer"},
				"joinToken":        map[string]any{"type": "http", "scheme": "bearer", "description": "a host join token vpool1.<ca-hash>.<secret>"},
				"agentCertificate": map[string]any{"type": "mutualTLS"},
			},
		},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func newIdleServer(t *testing.T) *Server {
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	s, err := New(Config{Store: st, Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.ln.Close(); s.agentLn.Close() })
	return s
}

// TestOpenAPI checks the committed document against the generated one,
// and the three-way agreement of the routes served, api.Routes /
// api.AgentRoutes and the document's paths.
func TestOpenAPI(t *testing.T) {
	s := newIdleServer(t)
	gen, err := generateOpenAPI(s)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "api", "openapi.json")
	if *update {
		if err := os.WriteFile(path, gen, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
	}
	committed := api.OpenAPI
	if *update {
		committed = gen // the embedded copy is the one from before the rewrite
	}
	if err := json.Unmarshal(committed, &doc); err != nil {
		t.Fatalf("embedded openapi.json is not JSON: %v", err)
	}
	inDoc := map[string]bool{}
	for p, methods := range doc.Paths {
		for m := range methods {
			inDoc[strings.ToUpper(m)+" "+p] = true
		}
	}
	inTable := map[string]bool{}
	for _, r := range append(append([]api.Route{}, api.Routes...), api.AgentRoutes...) {
		inTable[r.Method+" "+r.Path] = true
	}
	served := map[string]bool{}
	for _, e := range s.endpoints() {
		served[e.method+" "+e.path] = true
	}
	for _, e := range s.agentEndpoints() {
		served[e.method+" "+e.path] = true
	}
	for _, pair := range []struct {
		a, b   map[string]bool
		an, bn string
	}{{inTable, inDoc, "api.Routes", "openapi.json"}, {inDoc, inTable, "openapi.json", "api.Routes"},
		{inTable, served, "api.Routes", "the server"}, {served, inTable, "the server", "api.Routes"}} {
		var missing []string
		for k := range pair.a {
			if !pair.b[k] {
				missing = append(missing, k)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("in %s but not in %s: %v", pair.an, pair.bn, missing)
		}
	}
	if !*update && !bytes.Equal(gen, api.OpenAPI) {
		t.Errorf("internal/api/openapi.json is stale: run go test ./internal/server -run TestOpenAPI -update")
	}
}

// TestRoutesServed asks the live mux for every route: each answers from
// a handler (never the fallback 404 "no such endpoint").
func TestRoutesServed(t *testing.T) {
	// every route once without a token: more failed authentications
	// than one address may make (TestTokenSprayIsLimited)
	ts := startServer(t, nil, func(c *Config) { c.APIRate = -1 })
	for _, r := range api.Routes {
		path := pathParam.ReplaceAllString(r.Path, "x")
		code, e := ts.call(r.Method, path, "", nil, nil)
		public := r.Path == "/api/v1/openapi.json"
		if (public && code != 200) || (!public && (code != 401 || e.Code != api.CodeUnauthorized)) {
			t.Errorf("%s %s answered %d %+v", r.Method, path, code, e)
		}
	}
}

package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// A project that floods the user API is answered 429 with a Retry-After
// once its burst is spent, whichever of its tokens it uses; another
// project and the cluster admin are not held up by it.
func TestTenantIsRateLimited(t *testing.T) {
	const rate = 5 // a burst of 50, then 5 a second
	ts := startServer(t, nil, func(c *Config) { c.APIRate = rate })
	admin := ts.AdminToken()
	for _, p := range []string{"alpha", "beta"} {
		ts.mustCall(201, "POST", "/api/v1/projects", admin, api.ProjectCreateRequest{Name: p}, nil)
	}
	// a project admin mints more tokens: they share the project's bucket
	toks := []string{ts.tokenFor("alpha", model.RoleAdmin), ts.tokenFor("alpha", model.RoleViewer), ts.tokenFor("alpha", model.RoleMember)}
	other := ts.tokenFor("beta", model.RoleMember)
	start := time.Now()
	const sent = 200
	refused := 0
	var last api.Error
	for i := range sent {
		code, e := ts.call("GET", "/api/v1/vms?project=alpha", toks[i%len(toks)], nil, nil)
		switch code {
		case 200:
		case 429:
			refused++
			last = e
		default:
			t.Fatalf("list: %d %+v", code, e)
		}
	}
	allowed := rate*apiBurstFactor + int(time.Since(start).Seconds()*rate) + 1
	if sent-refused > allowed {
		t.Fatalf("%d of %d requests went through; the limit allows %d", sent-refused, sent, allowed)
	}
	if refused == 0 {
		t.Fatal("no request was refused")
	}
	if last.Code != api.CodeRateLimited || !strings.Contains(last.Message, "project alpha") || !strings.Contains(last.Message, "--api-rate") {
		t.Fatalf("over the limit: %+v, want rate_limited naming the project and the flag", last)
	}
	req, _ := http.NewRequest("GET", "http://"+ts.Addr()+"/api/v1/vms?project=alpha", nil)
	req.Header.Set("Authorization", "Bearer "+toks[0])
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the limit: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	ts.mustCall(200, "GET", "/api/v1/vms?project=beta", other, nil, nil)
	for range 100 {
		ts.mustCall(200, "GET", "/api/v1/vms?all-projects=true", admin, nil, nil)
	}
}

// An address that sprays made-up tokens is refused before its tokens
// are looked up once its failed authentications are spent; a tenant
// whose token the server knows still gets through from that address.
func TestTokenSprayIsLimited(t *testing.T) {
	ts := startServer(t, nil)
	ts.mustCall(201, "POST", "/api/v1/projects", ts.AdminToken(), api.ProjectCreateRequest{Name: "alpha"}, nil)
	good := ts.tokenFor("alpha", model.RoleMember)
	start := time.Now()
	const sent = 200
	limited := 0
	for i := range sent {
		code, e := ts.call("GET", "/api/v1/vms?project=alpha", fmt.Sprintf("made-up-%d", i), nil, nil)
		switch code {
		case 401:
		case 429:
			limited++
			if !strings.Contains(e.Message, "127.0.0.1") {
				t.Fatalf("429 %+v does not name the address", e)
			}
		default:
			t.Fatalf("made-up token: %d %+v", code, e)
		}
	}
	allowed := authFailBurst + int(time.Since(start).Seconds()*authFailRate) + 1
	if sent-limited > allowed {
		t.Fatalf("%d of %d made-up tokens were looked up; the limit allows %d", sent-limited, sent, allowed)
	}
	ts.mustCall(200, "GET", "/api/v1/vms?project=alpha", good, nil, nil)
}

package cli

import (
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

func (f *fakeServer) memberHandlers() map[string]handler {
	members := []api.Member{
		{Name: "s1", ID: "a1", PeerURLs: []string{"https://10.0.0.1:2380"}, RaftLeader: true,
			Server: &model.ServerRecord{Name: "s1", API: "http://10.0.0.1:8440", Agent: "https://10.0.0.1:8441", Started: now}},
		{Name: "s2", ID: "b2", PeerURLs: []string{"https://10.0.0.2:2380"}, Leader: true,
			Server: &model.ServerRecord{Name: "s2", API: "http://10.0.0.2:8440", Agent: "https://10.0.0.2:8441", Started: now}},
		{Name: "s3", ID: "c3", PeerURLs: []string{"https://10.0.0.3:2380"}},
		{Name: "s4", ID: "d4", PeerURLs: []string{"https://10.0.0.4:2380"}, Learner: true},
	}
	return map[string]handler{
		"GET /api/v1/cluster/members": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			return api.MemberList{Store: "embedded", Items: members}, nil
		},
		"POST /api/v1/cluster/members": func(w http.ResponseWriter, r *http.Request, body []byte) (any, *apiErr) {
			var req api.MemberAddRequest
			if e := decodeStrict(body, &req); e != nil {
				return nil, e
			}
			w.WriteHeader(http.StatusCreated)
			return api.MemberAddResponse{Name: req.Name, Token: "vpool1." + strings.Repeat("ab", 32) + ".secret",
				ExpiresAt: now.Add(time.Hour), Join: []string{"https://10.0.0.1:8441", "https://10.0.0.2:8441"}}, nil
		},
		"DELETE /api/v1/cluster/members/{name}": func(w http.ResponseWriter, r *http.Request, _ []byte) (any, *apiErr) {
			if r.PathValue("name") != "s3" {
				return nil, fail(404, api.CodeNotFound, "", "no member named %s", r.PathValue("name"))
			}
			w.WriteHeader(http.StatusNoContent)
			return nil, nil
		},
	}
}

func TestMemberCommands(t *testing.T) {
	f := newFake(t)
	res := f.cli(t, "cluster", "member", "list")
	want := `NAME  STATE    ROLE         API                   AGENTS                 PEER
s1    up       raft-leader  http://10.0.0.1:8440  https://10.0.0.1:8441  https://10.0.0.1:2380
s2    up       controllers  http://10.0.0.2:8440  https://10.0.0.2:8441  https://10.0.0.2:2380
s3    down     -            -                     -                      https://10.0.0.3:2380
s4    joining  -            -                     -                      https://10.0.0.4:2380
`
	if res.code != 0 || res.stdout != want {
		t.Errorf("member list: code %d\n%s\nwant\n%s\nstderr %s", res.code, res.stdout, want, res.stderr)
	}
	res = f.cli(t, "cluster", "member", "add", "s5", "--ttl", "2h")
	if res.code != 0 || strings.TrimSpace(res.stdout) != "vpool1."+strings.Repeat("ab", 32)+".secret" {
		t.Errorf("member add: stdout must be the token alone: code %d %q", res.code, res.stdout)
	}
	if !strings.Contains(res.stderr, "--name s5 --peer-url https://ADDRESS:PORT --join https://10.0.0.1:8441,https://10.0.0.2:8441 --join-token-file FILE") {
		t.Errorf("member add: no join command on stderr: %q", res.stderr)
	}
	if c := f.lastWrite(t); c.Body != `{"name":"s5","ttl":"2h0m0s"}` {
		t.Errorf("member add sent %s", c.Body)
	}
	if res = f.cli(t, "cluster", "member", "remove", "s3"); res.code != 0 || res.stdout != "member s3: removed\n" {
		t.Errorf("member remove: code %d %q %q", res.code, res.stdout, res.stderr)
	}
	if res = f.cli(t, "cluster", "member", "remove", "s9"); res.code != 1 || !strings.Contains(res.stderr, "no member named s9") {
		t.Errorf("remove of an unknown member: code %d %q", res.code, res.stderr)
	}
}

// The CLI knows every server: from --addr, $VPOOL_ADDR or the config
// file's servers, and fails over when the first is down.
func TestCLIFailsOver(t *testing.T) {
	f := newFake(t)
	seed(f)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	dir := t.TempDir()
	if err := WriteConfig(filepath.Join(dir, "vpool", "config.json"), Config{Addr: dead, Servers: []string{dead, f.srv.URL}, Token: goodToken}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   invocation
		args []string
	}{
		{"config servers", invocation{configDir: dir}, nil},
		{"--addr list", invocation{}, []string{"--addr", dead + "," + f.srv.URL, "--token", goodToken}},
		{"VPOOL_ADDR list", invocation{env: map[string]string{EnvAddr: dead + ", " + f.srv.URL, EnvToken: goodToken}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := tc.in.run(t, append(tc.args, "host", "list")...)
			if res.code != 0 || !strings.Contains(res.stdout, "h1") {
				t.Fatalf("host list through a list whose first server is down: code %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
			}
		})
	}
}

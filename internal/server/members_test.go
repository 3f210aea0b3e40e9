package server

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store"
)

// fakeMembers is an etcd membership in memory.
type fakeMembers struct {
	mu      sync.Mutex
	members []store.Member
	busy    bool
	nextID  uint64
}

func newFakeMembers() *fakeMembers {
	return &fakeMembers{nextID: 2, members: []store.Member{{ID: 1, Name: "vpool", PeerURLs: []string{"https://10.0.0.1:2380"}}}}
}

func (f *fakeMembers) Members(context.Context) ([]store.Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]store.Member(nil), f.members...), nil
}

func (f *fakeMembers) AddLearner(_ context.Context, peer string) (store.Member, []store.Member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.busy {
		return store.Member{}, nil, fmt.Errorf("%w: too many learners", store.ErrMembershipBusy)
	}
	m := store.Member{ID: f.nextID, PeerURLs: []string{peer}, Learner: true}
	f.nextID++
	f.members = append(f.members, m)
	return m, append([]store.Member(nil), f.members...), nil
}

func (f *fakeMembers) RemoveMember(_ context.Context, id uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, m := range f.members {
		if m.ID == id {
			f.members = append(f.members[:i], f.members[i+1:]...)
			return nil
		}
	}
	return store.ErrNoSuchMember
}

func (f *fakeMembers) PromoteStarted(context.Context) ([]string, error) { return nil, nil }
func (f *fakeMembers) RaftLeader(context.Context) (uint64, error)       { return 1, nil }
func (f *fakeMembers) JoinSecrets() ([]byte, []byte, error) {
	return []byte("store-ca-cert"), []byte("store-ca-key"), nil
}

func (f *fakeMembers) setBusy(b bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.busy = b
}

func (f *fakeMembers) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.members)
}

// serverJoin posts a server join over pinned TLS and returns the status.
func serverJoin(t *testing.T, ts *testServer, token, name string, out *api.ServerJoinResponse) int {
	t.Helper()
	if out == nil {
		out = &api.ServerJoinResponse{}
	}
	return agentDo(t, pinnedClient(ts.CAHash()), "POST", "https://"+ts.AgentAddr()+"/agent/v1/members/join", token,
		api.ServerJoinRequest{Name: name, PeerURL: "https://10.0.0.9:2380"}, out)
}

func (ts *testServer) memberToken(name string) string {
	ts.t.Helper()
	var res api.MemberAddResponse
	ts.mustCall(201, "POST", "/api/v1/cluster/members", ts.AdminToken(), api.MemberAddRequest{Name: name}, &res)
	return res.Token
}

// TestServerJoin: only a server join token of the new server's name,
// once, admits a server; what it hands over is the store's CA and the
// seal key; a busy membership consumes nothing.
func TestServerJoin(t *testing.T) {
	fm := newFakeMembers()
	ts := startServer(t, nil, func(c *Config) { c.Members = fm })
	hostTok, err := ts.NewJoinToken(context.Background(), time.Hour, 5)
	if err != nil {
		t.Fatal(err)
	}
	s2 := ts.memberToken("s2")
	foreign := pki.FormatJoinToken(strings.Repeat("ab", 32), "whatever")
	refusals := []struct {
		name, token, server string
		want                int
	}{
		{"no token", "", "s2", 401},
		{"a host join token", hostTok.Token, "s2", 401},
		{"another cluster's token", foreign, "s2", 401},
		{"another server's name", s2, "s3", 403},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			if code := serverJoin(t, ts, tc.token, tc.server, nil); code != tc.want {
				t.Fatalf("join = %d, want %d", code, tc.want)
			}
			if fm.count() != 1 {
				t.Fatalf("a refused join added a member: %d", fm.count())
			}
		})
	}

	fm.setBusy(true)
	if code := serverJoin(t, ts, s2, "s2", nil); code != 503 {
		t.Fatalf("join while etcd admits no learner = %d, want 503", code)
	}
	fm.setBusy(false)
	var res api.ServerJoinResponse
	if code := serverJoin(t, ts, s2, "s2", &res); code != 200 {
		t.Fatalf("join after the busy answer = %d, want 200 (the token was not used up)", code)
	}
	seal, err := ts.sealKey(false)
	if err != nil {
		t.Fatal(err)
	}
	if res.EtcdCACert != "store-ca-cert" || res.EtcdCAKey != "store-ca-key" || res.SealKey != hex.EncodeToString(seal) ||
		res.InitialCluster != "vpool=https://10.0.0.1:2380,s2=https://10.0.0.9:2380" {
		t.Fatalf("join answer = %+v", res)
	}
	if fm.count() != 2 {
		t.Fatalf("members after the join: %d, want 2", fm.count())
	}
	if code := serverJoin(t, ts, s2, "s2", nil); code != 401 {
		t.Fatalf("the token joined twice: %d", code)
	}
	// Neither a bearer of the user API nor a host join token.
	if code, _ := ts.call("GET", "/api/v1/cluster", ts.memberToken("s4"), nil, nil); code != 401 {
		t.Errorf("a server join token on the user API = %d, want 401", code)
	}
	if _, code := joinWith(t, ts, ts.memberToken("s5"), "h1"); code != 401 {
		t.Errorf("a server join token joined a host: %d", code)
	}
}

func TestMemberListAddRemove(t *testing.T) {
	fm := newFakeMembers()
	ts := startServer(t, nil, func(c *Config) { c.Members = fm })
	admin := ts.AdminToken()
	var ml api.MemberList
	// The server announces itself in the background.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ts.mustCall(200, "GET", "/api/v1/cluster/members", admin, nil, &ml)
		if len(ml.Items) == 1 && ml.Items[0].Server != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(ml.Items) != 1 || ml.Items[0].Name != "vpool" || !ml.Items[0].RaftLeader || ml.Items[0].Server == nil ||
		ml.Items[0].Server.Agent != "https://"+ts.AgentAddr() {
		t.Fatalf("member list = %+v", ml)
	}
	ts.mustCall(409, "POST", "/api/v1/cluster/members", admin, api.MemberAddRequest{Name: "vpool"}, nil)
	ts.mustCall(400, "POST", "/api/v1/cluster/members", admin, api.MemberAddRequest{Name: "Bad Name"}, nil)
	ts.mustCall(409, "DELETE", "/api/v1/cluster/members/vpool", admin, nil, nil)
	ts.mustCall(404, "DELETE", "/api/v1/cluster/members/nobody", admin, nil, nil)
	if code := serverJoin(t, ts, ts.memberToken("s2"), "s2", nil); code != 200 {
		t.Fatalf("join: %d", code)
	}
	// The learner has no name until it starts: it goes by its ID.
	ts.mustCall(200, "GET", "/api/v1/cluster/members", admin, nil, &ml)
	if len(ml.Items) != 2 || ml.Items[1].Name != "joining-2" || !ml.Items[1].Learner {
		t.Fatalf("member list with a learner = %+v", ml.Items)
	}
	ts.mustCall(204, "DELETE", "/api/v1/cluster/members/joining-2", admin, nil, nil)
	if fm.count() != 1 {
		t.Fatalf("members after the removal: %d", fm.count())
	}
}

// With an external etcd (or in memory) there is no membership to manage.
func TestMembersWithoutEmbeddedStore(t *testing.T) {
	ts := startServer(t, nil)
	ts.mustCall(409, "POST", "/api/v1/cluster/members", ts.AdminToken(), api.MemberAddRequest{Name: "s2"}, nil)
	ts.mustCall(409, "DELETE", "/api/v1/cluster/members/s2", ts.AdminToken(), nil, nil)
}

package server

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// Members is the membership of the embedded store's cluster, which
// etcdstore.Store manages; nil with an external etcd or an in-memory
// store (docs/ha.md).
type Members interface {
	Members(ctx context.Context) ([]store.Member, error)
	// AddLearner adds a non-voting member at peerURL and returns it with
	// the membership it joined (store.ErrMembershipBusy: retry later).
	AddLearner(ctx context.Context, peerURL string) (store.Member, []store.Member, error)
	RemoveMember(ctx context.Context, id uint64) error
	// PromoteStarted promotes the learners that have caught up.
	PromoteStarted(ctx context.Context) ([]string, error)
	// RaftLeader is the ID of the member leading raft.
	RaftLeader(ctx context.Context) (uint64, error)
	// JoinSecrets is the store's private CA, certificate and key (PEM).
	JoinSecrets() (caCert, caKey []byte, err error)
}

// Timing of a server's own record and of learner promotion.
const (
	serverRecordTTL = 10 * time.Second
	promoteEvery    = time.Second
)

func (s *Server) memberEndpoints() []endpoint {
	return []endpoint{
		{method: "GET", path: "/api/v1/cluster/members", handle: s.listMembers, resp: api.MemberList{}, status: 200},
		{method: "POST", path: "/api/v1/cluster/members", handle: s.addMember, req: api.MemberAddRequest{}, resp: api.MemberAddResponse{}, status: 201},
		{method: "DELETE", path: "/api/v1/cluster/members/{name}", handle: s.removeMember, status: 204},
	}
}

func (s *Server) memberAgentEndpoints() []agentEndpoint {
	return []agentEndpoint{
		{method: "POST", path: "/agent/v1/members/join", handle: s.joinServer, req: api.ServerJoinRequest{}, resp: api.ServerJoinResponse{}, status: 200, audit: "cluster/members"},
	}
}

// listMembers lists the store's members with the servers that run
// (embedded store), or the running servers (external etcd).
func (s *Server) listMembers(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	ctx := r.Context()
	servers, err := s.repo.ListServers(ctx)
	if err != nil {
		return err
	}
	leader := ""
	if kv, err := s.cfg.Store.Get(ctx, store.LeaderKey); err == nil {
		leader = string(kv.Value)
	}
	out := api.MemberList{Store: s.cfg.StoreKind, Items: []api.Member{}}
	if s.cfg.Members == nil {
		for _, name := range sortedNames(servers) {
			rec := servers[name]
			out.Items = append(out.Items, api.Member{Name: name, Leader: name == leader, Server: &rec})
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	ms, err := s.cfg.Members.Members(ctx)
	if err != nil {
		return err
	}
	raft, _ := s.cfg.Members.RaftLeader(ctx)
	for _, m := range ms {
		am := api.Member{Name: memberName(m), ID: strconv.FormatUint(m.ID, 16), PeerURLs: m.PeerURLs, Learner: m.Learner,
			RaftLeader: m.ID == raft, Leader: m.Name != "" && m.Name == leader}
		if rec, ok := servers[m.Name]; ok && m.Name != "" {
			am.Server = &rec
		}
		out.Items = append(out.Items, am)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// addMember issues a single-use token that lets one new server, of the
// given name, join through any running server's agent listener.
func (s *Server) addMember(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	var req api.MemberAddRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := model.ValidName("name", req.Name); err != nil {
		return err
	}
	if s.cfg.Members == nil {
		return conflict("this cluster's store is an external etcd: start the new server with the same --etcd-endpoints and a copy of %s", DefaultCAKeyFile)
	}
	ttl, err := parseTTL("ttl", req.TTL, time.Hour, 7*24*time.Hour)
	if err != nil {
		return err
	}
	ctx := r.Context()
	ms, err := s.cfg.Members.Members(ctx)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Name == req.Name {
			return errf(http.StatusConflict, api.CodeConflict, "name", "a server named %q is a member already; remove it first (vpool cluster member remove %s)", req.Name, req.Name)
		}
	}
	secret := newSecret("")
	exp := s.now().Add(ttl)
	tok := &model.Token{Hash: state.HashSecret(secret), Role: model.RoleAgent, Purpose: state.PurposeServerJoin,
		CreatedAt: s.now(), ExpiresAt: exp, Uses: 1, Host: req.Name}
	if err := s.repo.CreateToken(ctx, tok); err != nil {
		return err
	}
	servers, err := s.repo.ListServers(ctx)
	if err != nil {
		return err
	}
	join := []string{}
	for _, name := range sortedNames(servers) {
		join = append(join, servers[name].Agent)
	}
	writeJSON(w, http.StatusCreated, api.MemberAddResponse{Name: req.Name, Token: pki.FormatJoinToken(s.ca.Hash(), secret), ExpiresAt: exp, Join: join})
	return nil
}

// removeMember removes a member from the store's cluster; its server
// stops. etcd refuses when the started members would lose their quorum.
func (s *Server) removeMember(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	if s.cfg.Members == nil {
		return conflict("this cluster's store is an external etcd: stop the server; its membership is etcd's own")
	}
	name := r.PathValue("name")
	ctx := r.Context()
	ms, err := s.cfg.Members.Members(ctx)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if memberName(m) != name {
			continue
		}
		if len(ms) == 1 {
			return conflict("%s is the only member: removing it would delete the cluster", name)
		}
		if err := s.cfg.Members.RemoveMember(ctx, m.ID); err != nil {
			return conflict("etcd refused to remove %s: %v", name, err)
		}
		s.log.Warn("member removed", "member", name)
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	return notFound("no member named %s (vpool cluster member list)", quoteField(name))
}

// joinServer admits a new server: it checks its server join token, adds
// its etcd member as a learner, consumes the token (removing the member
// again when another join took it first), and hands over the secrets
// the new server needs. The agent listener serves it: TLS with the
// cluster CA, which the token pins.
func (s *Server) joinServer(w http.ResponseWriter, r *http.Request, _ string) error {
	bearer := bearerOf(r)
	caHash, secret, err := pki.ParseJoinToken(bearer)
	if err != nil {
		return unauthorized("joining the control plane needs a server join token as bearer (vpool cluster member add)")
	}
	if subtle.ConstantTimeCompare([]byte(caHash), []byte(s.ca.Hash())) != 1 {
		return unauthorized("the join token is for another cluster (CA hash differs)")
	}
	var req api.ServerJoinRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := model.ValidName("name", req.Name); err != nil {
		return err
	}
	noteObject(r, req.Name)
	if err := store.CheckPeerURL(req.PeerURL); err != nil {
		return fieldError("peerURL", "%v", err)
	}
	if s.cfg.Members == nil {
		return conflict("this server's store is an external etcd: start new servers with --etcd-endpoints")
	}
	ctx := r.Context()
	hash := state.HashSecret(secret)
	rev, err := s.repo.ServerJoinToken(ctx, hash, req.Name, s.now())
	if err != nil {
		return joinTokenError(err)
	}
	resp, err := s.admitMember(ctx, req, hash, rev)
	if err != nil {
		return err
	}
	s.log.Info("server joined the control plane", "server", req.Name, "peer", req.PeerURL, "member", resp.MemberID)
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// admitMember adds the learner and consumes the token.
func (s *Server) admitMember(ctx context.Context, req api.ServerJoinRequest, hash string, rev int64) (*api.ServerJoinResponse, error) {
	caCert, caKey, err := s.cfg.Members.JoinSecrets()
	if err != nil {
		return nil, err
	}
	seal, err := s.sealKey(false)
	if err != nil {
		return nil, err
	}
	added, members, err := s.cfg.Members.AddLearner(ctx, req.PeerURL)
	switch {
	case errors.Is(err, store.ErrMembershipBusy):
		return nil, errf(http.StatusServiceUnavailable, api.CodeUnavailable, "", "%v; retry in a few seconds", err)
	case err != nil:
		return nil, errf(http.StatusConflict, api.CodeConflict, "peerURL", "etcd refused the new member: %v", err)
	}
	if err := s.repo.ConsumeServerJoin(ctx, hash, rev); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if rerr := s.cfg.Members.RemoveMember(rctx, added.ID); rerr != nil {
			s.log.Error("a member added for a join whose token was taken could not be removed", "member", fmt.Sprintf("%x", added.ID), "err", rerr)
		}
		return nil, joinTokenError(err)
	}
	return &api.ServerJoinResponse{EtcdCACert: string(caCert), EtcdCAKey: string(caKey), SealKey: hex.EncodeToString(seal),
		InitialCluster: store.InitialCluster(members, req.Name, req.PeerURL), MemberID: strconv.FormatUint(added.ID, 16)}, nil
}

func joinTokenError(err error) error {
	switch {
	case errors.Is(err, state.ErrTokenInvalid):
		return unauthorized("invalid server join token: it is unknown, used or revoked; issue one with vpool cluster member add")
	case errors.Is(err, state.ErrTokenExpired):
		return unauthorized("the server join token has expired; issue one with vpool cluster member add")
	case errors.Is(err, state.ErrTokenHost):
		return forbidden("name: this server join token is for another server name (%v)", err)
	}
	return err
}

// announce keeps this server's record in the store, attached to a lease
// of its own, until ctx ends; it revokes the lease on the way out.
func (s *Server) announce(ctx context.Context) {
	rec := model.ServerRecord{Name: s.cfg.Name, API: s.URL(), Agent: "https://" + s.AgentAddr(), Version: s.cfg.Version, Started: s.now()}
	var lease store.LeaseID
	defer func() {
		if lease != 0 {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_ = s.cfg.Store.Revoke(rctx, lease)
		}
	}()
	tick := time.NewTicker(serverRecordTTL / 3)
	defer tick.Stop()
	for {
		if lease != 0 {
			if err := s.cfg.Store.KeepAlive(ctx, lease); errors.Is(err, store.ErrNoLease) {
				lease = 0
			}
		}
		if lease == 0 {
			id, err := s.cfg.Store.Grant(ctx, int64(serverRecordTTL/time.Second))
			if err == nil {
				if err = s.repo.PutServer(ctx, rec, id); err == nil {
					lease = id
				}
			}
			if err != nil && ctx.Err() == nil {
				s.log.Debug("announce this server", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// promoteLearners promotes joining members once they have caught up.
// Every server does it: promotion is idempotent, and a joining server
// waits for it whichever server admitted it.
func (s *Server) promoteLearners(ctx context.Context) {
	if s.cfg.Members == nil {
		return
	}
	tick := time.NewTicker(promoteEvery)
	defer tick.Stop()
	for {
		if names, err := s.cfg.Members.PromoteStarted(ctx); err != nil && ctx.Err() == nil {
			s.log.Debug("promote learners", "err", err)
		} else if len(names) > 0 {
			s.log.Info("promoted joining servers to voting members", "members", names)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// memberName is a member's name; one that has not started yet (a join
// that has not finished, or never will) goes by "joining-<id>", which
// vpool cluster member remove takes too.
func memberName(m store.Member) string {
	if m.Name == "" {
		return "joining-" + strconv.FormatUint(m.ID, 16)
	}
	return m.Name
}

func bearerOf(r *http.Request) string {
	b, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return strings.TrimSpace(b)
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

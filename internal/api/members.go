package api

import (
	"time"

	"github.com/vpool/vpool/internal/model"
)

// Member is one server of the control plane (docs/ha.md): with the
// embedded store, an etcd member, and, while it runs, its vpool server.
type Member struct {
	Name string `json:"name"`
	// ID is the etcd member's ID (hex); empty with an external etcd.
	ID       string   `json:"id,omitempty"`
	PeerURLs []string `json:"peerURLs,omitempty"`
	// Learner: the member replicates but does not vote yet (a server
	// that is joining).
	Learner bool `json:"learner,omitempty"`
	// RaftLeader: this member leads the store's raft now.
	RaftLeader bool `json:"raftLeader,omitempty"`
	// Leader: this server runs the controllers now.
	Leader bool `json:"leader,omitempty"`
	// Server is the running server's record; nil while it is down.
	Server *model.ServerRecord `json:"server,omitempty"`
}

// MemberList answers GET /api/v1/cluster/members.
type MemberList struct {
	// Store is embedded or external; with an external etcd the members
	// are the running servers only.
	Store string   `json:"store"`
	Items []Member `json:"items"`
}

// MemberAddRequest asks for a token that lets one new server join.
type MemberAddRequest struct {
	// Name is the new server's name (its --name).
	Name string `json:"name"`
	TTL  string `json:"ttl,omitempty"` // default 1h, at most 168h
}

// MemberAddResponse is the single-use server join token, bound to the
// name, and the agent listeners of the running servers to join through.
type MemberAddResponse struct {
	Name      string    `json:"name"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
	Join      []string  `json:"join"`
}

// ServerJoinRequest is sent by a new server to POST
// /agent/v1/members/join, with its server join token as bearer.
type ServerJoinRequest struct {
	Name string `json:"name"`
	// PeerURL is where its etcd member will serve raft (https, fixed port).
	PeerURL string `json:"peerURL"`
}

// ServerJoinResponse carries what a new server needs to become a member:
// the store's private CA (to make its member and client certificates),
// the key that seals the cluster CA, and the membership to start with.
// It crosses only TLS pinned to the cluster CA.
type ServerJoinResponse struct {
	EtcdCACert string `json:"etcdCACert"`
	EtcdCAKey  string `json:"etcdCAKey"`
	// SealKey is the cluster CA's seal key (hex).
	SealKey string `json:"sealKey"`
	// InitialCluster is etcd's "name=peerURL,..." with the new member.
	InitialCluster string `json:"initialCluster"`
	MemberID       string `json:"memberID"`
}

package store

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Member is one member of the store's own cluster: an etcd member
// embedded in a vpool server (etcdstore). Its Name is the server's name,
// the identity it campaigns for leadership with.
type Member struct {
	ID   uint64
	Name string // empty until the member has started once
	// PeerURLs are where the member talks raft; ClientURLs where it
	// serves its own server (loopback by default).
	PeerURLs   []string
	ClientURLs []string
	// Learner members replicate but do not vote; a joining server starts
	// as one and is promoted once it has caught up.
	Learner bool
}

// Keys of the control plane's own members (docs/ha.md).
const (
	// ServersPrefix holds one record per running vpool server, attached
	// to that server's lease: its name, addresses and version.
	ServersPrefix = Root + "servers/"
	// BalanceHistoryPrefix holds the balancer's usage history, in shards
	// of many hosts (one record per host before issue 14's fifth round),
	// so that a new leader decides as the old one would have.
	BalanceHistoryPrefix = Root + "balance/history/"
)

// ServerKey is the key of a running server's record.
func ServerKey(name string) string { return ServersPrefix + name }

// BalanceHistoryKey is the key of a host's usage history record (as
// leaders before the shards stored it).
func BalanceHistoryKey(host string) string { return BalanceHistoryPrefix + host }

// BalanceHistoryShardKey is the key of shard n of the usage history. '~'
// is no part of a host name, so it never meets a host's record.
func BalanceHistoryShardKey(n int) string { return fmt.Sprintf("%s~%04d", BalanceHistoryPrefix, n) }

// Sentinel errors of membership changes.
var (
	// ErrNotEmbedded: the store is a client of an external cluster, whose
	// membership vpool does not manage.
	ErrNotEmbedded = errors.New("store: not an embedded member")
	// ErrMembershipBusy: a learner is already catching up (etcd allows
	// one at a time), or a member joined less than 5 s ago and etcd
	// waits until every voter has been connected that long; retry.
	ErrMembershipBusy = errors.New("store: membership busy: another member is joining or has just joined")
	// ErrNoSuchMember: no member has this name or ID.
	ErrNoSuchMember = errors.New("store: no such member")
)

// CheckPeerURL accepts an https URL with a host and a port other than 0:
// the address every other member dials, so it must be fixed and
// reachable.
func CheckPeerURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || u.Port() == "" || u.Port() == "0" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("store: peer URL %q: want https://HOST:PORT with a fixed port that the other servers reach", raw)
	}
	return nil
}

// InitialCluster renders a membership as etcd's initial cluster string
// for the member self (name) at peerURL: every member by name (one not
// started yet under a stand-in name: only URLs are compared) and self.
func InitialCluster(members []Member, self, peerURL string) string {
	var parts []string
	for _, m := range members {
		name := m.Name
		if slices.Contains(m.PeerURLs, peerURL) {
			name = self
		} else if name == "" {
			name = fmt.Sprintf("joining-%x", m.ID)
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, name+"="+u)
		}
	}
	return strings.Join(parts, ",")
}

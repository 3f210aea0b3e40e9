package store

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
	// BalanceHistoryPrefix holds the balancer's usage history, one record
	// per host, so that a new leader decides as the old one would have.
	BalanceHistoryPrefix = Root + "balance/history/"
)

// ServerKey is the key of a running server's record.
func ServerKey(name string) string { return ServersPrefix + name }

// BalanceHistoryKey is the key of a host's usage history record.
func BalanceHistoryKey(host string) string { return BalanceHistoryPrefix + host }

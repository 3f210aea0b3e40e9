package etcdstore

import "google.golang.org/grpc"

// DefragDue is defragDue for the external tests.
var DefragDue = defragDue

// RenewedBy is the etcd member that answered s's last lease renewal.
func RenewedBy(s *Store) uint64 { return s.renew.answeredBy.Load() }

// RenewViaLeader turns the sending of renewals to the raft leader on or
// off (benchmarks compare both).
func RenewViaLeader(s *Store, on bool) { s.renew.viaLeader.Store(on) }

// WithDialOptions returns c whose member's client dials with opts too.
func WithDialOptions(c Config, opts ...grpc.DialOption) Config {
	c.dialOpts = append(c.dialOpts, opts...)
	return c
}

// WatchOverClient makes s's watches go over its gRPC client, as before
// the in-process watch (benchmarks compare both).
func WatchOverClient(s *Store) { s.local = nil }

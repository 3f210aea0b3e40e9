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

// ReadIndexes is how many of s's revision reads went through the
// member's read index (readrev.go).
func ReadIndexes(s *Store) int64 { return s.memberRev.readIndexes.Load() }

// RevViaReadIndex sends every revision read of s through the read
// index, as before the fast path (benchmarks compare both).
func RevViaReadIndex(s *Store, on bool) { s.memberRev.viaReadIndex.Store(on) }

// HoldApply stops the embedded member's apply of committed entries (it
// holds the lock of the member's backend that every apply takes) until
// release is called: the member then commits writes it cannot apply,
// and a read index waits.
func HoldApply(s *Store) (release func()) {
	tx := s.srv.Backend().BatchTx()
	tx.LockOutsideApply()
	return tx.Unlock
}

// Unapplied is how many entries the embedded member committed and has
// not applied yet.
func Unapplied(s *Store) int64 {
	return int64(s.srv.CommittedIndex()) - int64(s.srv.AppliedIndex())
}

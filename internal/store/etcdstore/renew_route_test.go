package etcdstore

import (
	"context"
	"net"
	"testing"
)

// TestRenewalsFallBackFromAnUnreachableLeader points a member's renewals
// at a "leader" whose client URL refuses connections: each renewal must
// still succeed within its deadline, answered by the local member, and
// the route must keep off that member afterwards.
func TestRenewalsFallBackFromAnUnreachableLeader(t *testing.T) {
	s, err := StartEmbedded(context.Background(), Config{DataDir: t.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	const ghost = 0xdead
	s.renew.route.leader = func() (uint64, []string) { return ghost, []string{dead} }

	ctx := context.Background()
	id, err := s.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 * renewStreams {
		rctx, cancel := context.WithTimeout(ctx, 5*remoteOpenTimeout)
		err := s.KeepAlive(rctx, id)
		cancel()
		if err != nil {
			t.Fatalf("renewal %d with the leader unreachable: %v", i, err)
		}
		if by := s.renew.answeredBy.Load(); by != s.member.ID {
			t.Fatalf("renewal %d answered by %x, want the local member %x", i, by, s.member.ID)
		}
	}
	s.renew.route.mu.Lock()
	avoid := s.renew.route.avoid
	s.renew.route.mu.Unlock()
	if avoid != ghost {
		t.Fatalf("the route avoids %x, want the unreachable member %x", avoid, ghost)
	}
}

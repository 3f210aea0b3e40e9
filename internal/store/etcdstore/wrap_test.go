package etcdstore

import (
	"errors"
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vpool/vpool/internal/store"
)

// An etcd that fails to answer (an election, a timeout inside etcd, no
// endpoint) is store.ErrUnavailable, whose writes have an unknown
// outcome; an etcd that refuses the request is not.
func TestWrapSaysUnavailable(t *testing.T) {
	s := &Store{}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{rpctypes.ErrTimeout, true},
		{rpctypes.ErrTimeoutDueToLeaderFail, true},
		{rpctypes.ErrTimeoutDueToConnectionLost, true},
		{rpctypes.ErrLeaderChanged, true},
		{rpctypes.ErrNoLeader, true},
		{rpctypes.ErrGRPCNoLeader, true},
		{fmt.Errorf("dial: %w", clientv3.ErrNoAvailableEndpoints), true},
		{status.Error(codes.Unavailable, "connection refused"), true},
		{rpctypes.ErrCompacted, false},
		{rpctypes.ErrGRPCLeaseNotFound, false},
		{rpctypes.ErrGRPCNotCapable, false},
		{status.Error(codes.InvalidArgument, "too many operations"), false},
		{errors.New("something else"), false},
	} {
		err := s.wrap("txn", tc.err)
		if got := errors.Is(err, store.ErrUnavailable); got != tc.want {
			t.Errorf("wrap(%v) is ErrUnavailable = %v, want %v (%v)", tc.err, got, tc.want, err)
		}
		if tc.want && !errors.Is(err, tc.err) {
			t.Errorf("wrap(%v) lost the cause: %v", tc.err, err)
		}
	}
}

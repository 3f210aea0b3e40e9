package state

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
)

func TestServerJoinToken(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	now := time.Now()
	put := func(secret, purpose, name string, exp time.Time) string {
		h := HashSecret(secret)
		if err := r.CreateToken(ctx, &model.Token{Hash: h, Role: model.RoleAgent, Purpose: purpose, Host: name, Uses: 1, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	good := put("good", PurposeServerJoin, "s2", now.Add(time.Hour))
	expired := put("old", PurposeServerJoin, "s2", now.Add(-time.Minute))
	hostJoin := put("host", "join", "", now.Add(time.Hour))
	tests := []struct {
		name, hash, server string
		want               error
	}{
		{"expired", expired, "s2", ErrTokenExpired},
		{"a host join token", hostJoin, "s2", ErrTokenInvalid},
		{"another name", good, "s3", ErrTokenHost},
		{"unknown", HashSecret("nope"), "s2", ErrTokenInvalid},
	}
	for _, tc := range tests {
		if _, err := r.ServerJoinToken(ctx, tc.hash, tc.server, now); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
	rev, err := r.ServerJoinToken(ctx, good, "s2", now)
	if err != nil {
		t.Fatal(err)
	}
	// Two joins read the token; one consumes it.
	if err := r.ConsumeServerJoin(ctx, good, rev); err != nil {
		t.Fatal(err)
	}
	if err := r.ConsumeServerJoin(ctx, good, rev); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("second consume: %v, want ErrTokenInvalid", err)
	}
	if _, err := r.ServerJoinToken(ctx, good, "s2", now); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("a consumed token: %v", err)
	}
}

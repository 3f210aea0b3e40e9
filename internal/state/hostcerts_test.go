package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// joinToken stores a join token of secret for uses hosts.
func joinToken(t *testing.T, r *Repo, secret string, uses int, exp time.Time) string {
	t.Helper()
	h := HashSecret(secret)
	if err := r.CreateToken(context.Background(), &model.Token{Hash: h, Role: model.RoleAgent, Purpose: "join", Uses: uses, ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	return h
}

// issuer hands out serials s1, s2, ... and counts its calls.
type issuer struct {
	mu sync.Mutex
	n  int
}

func (is *issuer) issue() (HostIdentity, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	is.n++
	return HostIdentity{Serial: fmt.Sprintf("s%d", is.n), NotAfter: time.Now().Add(time.Hour)}, nil
}

func TestJoinConsumesTokens(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	is := &issuer{}
	past := time.Now().Add(-time.Minute)
	once := joinToken(t, r, "once", 1, time.Time{})
	twice := joinToken(t, r, "twice", 2, time.Time{})
	expired := joinToken(t, r, "expired", 1, past)
	user := HashSecret("user")
	if err := r.CreateToken(ctx, &model.Token{Hash: user, Role: model.RoleAdmin}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name, hash, host string
		want             error
	}{
		{"single use", once, "h1", nil},
		{"single use again", once, "h2", ErrTokenInvalid},
		{"two uses", twice, "h2", nil},
		{"taken name", twice, "h1", ErrHostJoined},
		{"second use", twice, "h3", nil},
		{"used up", twice, "h4", ErrTokenInvalid},
		{"expired", expired, "h4", ErrTokenExpired},
		{"user token", user, "h4", ErrTokenInvalid},
		{"unknown", HashSecret("nope"), "h4", ErrTokenInvalid},
	}
	for _, st := range steps {
		_, err := r.Join(ctx, st.hash, st.host, is.issue)
		if !errors.Is(err, st.want) {
			t.Fatalf("%s: %v, want %v", st.name, err, st.want)
		}
	}
	if is.n != 3 {
		t.Fatalf("%d certificates issued for 3 joins", is.n)
	}
	for _, h := range []string{once, twice} {
		if _, err := r.TokenByHash(ctx, h); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a used-up token is still stored: %v", err)
		}
	}
	// a host record from before bindings holds its name too
	if _, err := r.UpsertHost(ctx, "legacy", func(*model.Host, bool) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Join(ctx, joinToken(t, r, "l", 1, time.Time{}), "legacy", is.issue); !errors.Is(err, ErrHostJoined) {
		t.Fatalf("join over a host record: %v", err)
	}
}

// Concurrent joins with one single-use token make exactly one host.
func TestJoinSingleUseRace(t *testing.T) {
	r := newRepo(t)
	h := joinToken(t, r, "race", 1, time.Time{})
	is := &issuer{}
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.Join(context.Background(), h, fmt.Sprintf("h%d", i), is.issue)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrTokenInvalid):
			t.Fatalf("a losing join: %v", err)
		}
	}
	ps, err := r.LoadPKI(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if won != 1 || len(ps.Bindings) != 1 {
		t.Fatalf("%d joins won, %d hosts bound", won, len(ps.Bindings))
	}
}

func TestRekeyAndRemoveRevoke(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	is := &issuer{}
	if _, err := r.Join(ctx, joinToken(t, r, "a", 1, time.Time{}), "h1", is.issue); err != nil {
		t.Fatal(err)
	}
	beat := func(serial string) error {
		_, err := r.UpsertHostGuarded(ctx, "h1", r.HeartbeatGuard("h1", serial, time.Now().Add(time.Hour)), func(*model.Host, bool) error { return nil })
		return err
	}
	if err := beat("s1"); err != nil {
		t.Fatalf("heartbeat with the host's certificate: %v", err)
	}
	if err := beat("s9"); !errors.Is(err, ErrCertReplaced) {
		t.Fatalf("heartbeat with another certificate of the name: %v", err)
	}
	if err := r.RekeyHost(ctx, "nohost", &model.Token{Hash: HashSecret("x")}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rekey of an unknown host: %v", err)
	}
	rk := &model.Token{Hash: HashSecret("rekey"), Role: model.RoleAgent}
	if err := r.RekeyHost(ctx, "h1", rk); err != nil {
		t.Fatal(err)
	}
	ps, _ := r.LoadPKI(ctx)
	if _, ok := ps.Revoked["s1"]; !ok || !ps.Bindings["h1"].Pending {
		t.Fatalf("after rekey: %+v", ps)
	}
	if err := beat("s1"); !errors.Is(err, ErrCertReplaced) {
		t.Fatalf("heartbeat with the re-keyed certificate: %v", err)
	}
	// the re-key token joins that name only, once
	if _, err := r.Join(ctx, rk.Hash, "h2", is.issue); !errors.Is(err, ErrTokenHost) {
		t.Fatalf("re-key token for another name: %v", err)
	}
	id, err := r.Join(ctx, rk.Hash, "h1", is.issue)
	if err != nil {
		t.Fatal(err)
	}
	if err := beat(id.Serial); err != nil {
		t.Fatalf("heartbeat with the new certificate: %v", err)
	}
	if _, err := r.Join(ctx, rk.Hash, "h1", is.issue); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("re-key token used twice: %v", err)
	}
	// removal revokes and forgets; the next heartbeat cannot bring the
	// host back
	if err := r.RemoveHost(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if err := beat(id.Serial); !errors.Is(err, ErrNotJoined) {
		t.Fatalf("heartbeat of a removed host: %v", err)
	}
	if _, err := r.GetHost(ctx, "h1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the removed host came back: %v", err)
	}
	ps, _ = r.LoadPKI(ctx)
	if _, ok := ps.Revoked[id.Serial]; !ok || len(ps.Bindings) != 0 {
		t.Fatalf("after remove: %+v", ps)
	}
	if err := r.RemoveHost(ctx, "h1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	// expired revocations are pruned
	if err := r.PruneRevoked(ctx, ps, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if ps, _ = r.LoadPKI(ctx); len(ps.Revoked) != 0 {
		t.Fatalf("revocations after prune: %v", ps.Revoked)
	}
}

// A host record from before bindings adopts the certificate of its first
// heartbeat; a host that does not exist is never created by one.
func TestHeartbeatGuardAdoptsLegacyHosts(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	if _, err := r.UpsertHost(ctx, "old", func(*model.Host, bool) error { return nil }); err != nil {
		t.Fatal(err)
	}
	up := func(host, serial string) error {
		_, err := r.UpsertHostGuarded(ctx, host, r.HeartbeatGuard(host, serial, time.Now().Add(time.Hour)), func(*model.Host, bool) error { return nil })
		return err
	}
	if err := up("old", "legacy-1"); err != nil {
		t.Fatal(err)
	}
	if err := up("old", "legacy-2"); !errors.Is(err, ErrCertReplaced) {
		t.Fatalf("a second certificate of an adopted host: %v", err)
	}
	if err := up("ghost", "g1"); !errors.Is(err, ErrNotJoined) {
		t.Fatalf("heartbeat of an unknown host: %v", err)
	}
	if _, err := r.GetHost(ctx, "ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Fatal("a heartbeat created a host that never joined")
	}
	// removal revokes the adopted certificate
	if err := r.RemoveHost(ctx, "old"); err != nil {
		t.Fatal(err)
	}
	ps, _ := r.LoadPKI(ctx)
	if _, ok := ps.Revoked["legacy-1"]; !ok {
		t.Fatalf("the adopted certificate was not revoked: %+v", ps.Revoked)
	}
}

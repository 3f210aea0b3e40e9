package etcdstore

import (
	"context"
	"testing"
)

// fakeMember is a member's view for memberRev without etcd.
type fakeMember struct {
	st  memberState
	rev int64
}

func newFakeRev(f *fakeMember) *memberRev {
	return &memberRev{self: 1, state: func() memberState { return f.st }, rev: func() int64 { return f.rev },
		readIndex: func(context.Context) error { return nil }}
}

// Each thing the fast path rests on, changed after a grant, sends the
// next read through the read index; so does a membership change of the
// store begun or ended, and a membership seen changing and back.
func TestRevisionFastPathRules(t *testing.T) {
	alone := memberState{leader: 1, term: 2, alone: true}
	tests := []struct {
		name   string
		change func(f *fakeMember, m *memberRev)
		fast   bool
	}{
		{"unchanged", func(*fakeMember, *memberRev) {}, true},
		{"leadership lost", func(f *fakeMember, _ *memberRev) { f.st.leader = 0 }, false},
		{"another leads", func(f *fakeMember, _ *memberRev) { f.st.leader = 7 }, false},
		{"new term", func(f *fakeMember, _ *memberRev) { f.st.term = 3 }, false},
		{"not alone", func(f *fakeMember, _ *memberRev) { f.st.alone = false }, false},
		{"stopping", func(f *fakeMember, _ *memberRev) { f.st.stopping = true }, false},
		{"member add in flight", func(_ *fakeMember, m *memberRev) { m.membershipChange() }, false},
		{"member add done", func(_ *fakeMember, m *memberRev) { m.membershipChange()() }, false},
		{"not alone, then alone again", func(f *fakeMember, m *memberRev) {
			f.st.alone = false
			if _, err := m.read(context.Background()); err != nil {
				t.Fatal(err)
			}
			f.st.alone = true
		}, false},
		{"old path asked", func(_ *fakeMember, m *memberRev) { m.viaReadIndex.Store(true) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeMember{st: alone, rev: 10}
			m := newFakeRev(f)
			ctx := context.Background()
			if _, err := m.read(ctx); err != nil || m.readIndexes.Load() != 1 {
				t.Fatalf("first read: %v, %d read indexes; want the grant's one", err, m.readIndexes.Load())
			}
			if _, err := m.read(ctx); err != nil || m.readIndexes.Load() != 1 {
				t.Fatalf("second read: %v, %d read indexes; want none more", err, m.readIndexes.Load())
			}
			tt.change(f, m)
			n := m.readIndexes.Load()
			f.rev = 11
			got, err := m.read(ctx)
			if err != nil || got != 11 {
				t.Fatalf("read = %d, %v; want 11", got, err)
			}
			if fast := m.readIndexes.Load() == n; fast != tt.fast {
				t.Fatalf("after %s: fast path %v, want %v", tt.name, fast, tt.fast)
			}
		})
	}
}

// A read index whose member changed while it ran grants nothing.
func TestRevisionNoGrantAcrossChange(t *testing.T) {
	f := &fakeMember{st: memberState{leader: 1, term: 2, alone: true}}
	m := newFakeRev(f)
	m.readIndex = func(context.Context) error { f.st.term = 3; return nil }
	ctx := context.Background()
	if _, err := m.read(ctx); err != nil {
		t.Fatal(err)
	}
	if m.grant.Load() != nil {
		t.Fatalf("granted %+v across a term change", m.grant.Load())
	}
	done := m.membershipChange()
	m.readIndex = func(context.Context) error { done(); return nil }
	if _, err := m.read(ctx); err != nil {
		t.Fatal(err)
	}
	if g := m.grant.Load(); g != nil && fast(1, f.st, g, m.epoch.Load()) {
		t.Fatalf("grant %+v valid across a membership change", g)
	}
}

package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vpool/vpool/internal/hypervisor"
)

// allocFixture is a registry and a state dir whose VM directories make
// claims hold (uidClaim staleness looks at them).
type allocFixture struct {
	t        *testing.T
	registry string
	state    string
	live     map[uint32]bool
}

func newAllocFixture(t *testing.T) *allocFixture {
	dir := t.TempDir()
	return &allocFixture{t: t, registry: filepath.Join(dir, "registry"), state: filepath.Join(dir, "state"), live: map[uint32]bool{}}
}

// allocator is a new allocator on the fixture's registry (a restarted
// driver gets a new one).
func (f *allocFixture) allocator(count uint32) *uidAllocator {
	a, err := newUIDAllocator(f.registry, 5000, count, f.state)
	if err != nil {
		f.t.Fatal(err)
	}
	a.liveUIDs = func() map[uint32]bool { return f.live }
	return a
}

// vmDir makes (or with gone, removes) the VM's directory.
func (f *allocFixture) vmDir(id string, gone bool) {
	dir := filepath.Join(f.state, "vms", id)
	if gone {
		os.RemoveAll(dir)
		return
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.t.Fatal(err)
	}
}

func (f *allocFixture) alloc(a *uidAllocator, id string) uint32 {
	f.vmDir(id, false)
	u, err := a.allocate(id)
	if err != nil {
		f.t.Fatalf("allocate %s: %v", id, err)
	}
	if u.UID != u.GID || !a.inRange(u.UID) {
		f.t.Fatalf("allocate %s = %+v: want uid = gid inside [5000, 5000+%d)", id, u, a.count)
	}
	return u.UID
}

func TestUIDAllocatorNeverSharesAUID(t *testing.T) {
	f := newAllocFixture(t)
	a := f.allocator(8)
	seen := map[uint32]string{}
	for _, id := range []string{"a", "b", "c", "d"} {
		uid := f.alloc(a, id)
		if other, ok := seen[uid]; ok {
			t.Fatalf("%s got uid %d, which %s holds", id, uid, other)
		}
		seen[uid] = id
	}
	// A second driver on the same host (another state dir, the same
	// registry) never gets one of them either.
	g := &allocFixture{t: t, registry: f.registry, state: filepath.Join(t.TempDir(), "state2"), live: f.live}
	b := g.allocator(8)
	uid := g.alloc(b, "a") // the same VM id, another driver
	if other, ok := seen[uid]; ok {
		t.Fatalf("the second driver got uid %d, which %s of the first holds", uid, other)
	}
}

func TestUIDAllocatorSkipsUIDsOfLiveProcesses(t *testing.T) {
	f := newAllocFixture(t)
	f.live[5000], f.live[5001] = true, true // e.g. a QEMU whose claim was lost with /run
	if uid := f.alloc(f.allocator(4), "a"); uid != 5002 {
		t.Fatalf("uid = %d, want 5002 (5000 and 5001 run processes)", uid)
	}
}

func TestUIDAllocatorRecoversAfterRestart(t *testing.T) {
	f := newAllocFixture(t)
	a := f.allocator(4)
	ua, ub := f.alloc(a, "a"), f.alloc(a, "b")

	// A restarted driver re-claims its VMs' uids and allocates others.
	r := f.allocator(4)
	for id, uid := range map[string]uint32{"a": ua, "b": ub} {
		ok, err := r.reclaim(id, vmUser{UID: uid, GID: uid})
		if err != nil || !ok {
			t.Fatalf("reclaim(%s, %d) = %v, %v; want true", id, uid, ok, err)
		}
	}
	if uc := f.alloc(r, "c"); uc == ua || uc == ub {
		t.Fatalf("c got %d after the restart, held by a or b", uc)
	}
	// Another VM cannot take a held uid by re-claiming it.
	f.vmDir("x", false)
	if ok, err := r.reclaim("x", vmUser{UID: ua, GID: ua}); err != nil || ok {
		t.Fatalf("reclaim of a's uid by x = %v, %v; want false", ok, err)
	}
	// A lost registry (a reboot cleared /run): the claims come back from
	// the records at the next start.
	if err := os.RemoveAll(f.registry); err != nil {
		t.Fatal(err)
	}
	r = f.allocator(4)
	if ok, err := r.reclaim("a", vmUser{UID: ua, GID: ua}); err != nil || !ok {
		t.Fatalf("reclaim after losing the registry = %v, %v; want true", ok, err)
	}
	if u, err := r.allocate("x"); err != nil || u.UID == ua {
		t.Fatalf("allocate after the re-claim = %+v, %v; want another uid than %d", u, err, ua)
	}
}

func TestUIDAllocatorReleaseAndStaleClaims(t *testing.T) {
	f := newAllocFixture(t)
	a := f.allocator(2)
	ua, ub := f.alloc(a, "a"), f.alloc(a, "b")
	if _, err := a.allocate("c"); !errors.Is(err, ErrUIDRangeExhausted) {
		t.Fatalf("allocate on a full range: %v, want ErrUIDRangeExhausted", err)
	}
	// release by another VM does nothing; by the holder frees the uid.
	if err := a.release("b", vmUser{UID: ua, GID: ua}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.allocate("c"); !errors.Is(err, ErrUIDRangeExhausted) {
		t.Fatalf("a's uid was freed by b's release: %v", err)
	}
	if err := a.release("a", vmUser{UID: ua, GID: ua}); err != nil {
		t.Fatal(err)
	}
	if uc := f.alloc(a, "c"); uc != ua {
		t.Fatalf("c got %d, want the released %d", uc, ua)
	}
	// A VM deleted without its release (a crash mid-delete): its claim is
	// stale once its directory is gone.
	f.vmDir("b", true)
	if ud := f.alloc(a, "d"); ud != ub {
		t.Fatalf("d got %d, want %d, whose VM is gone", ud, ub)
	}
	// A record naming another uid makes the claim stale too.
	rec := filepath.Join(f.state, "vms", "d", "config.json")
	if err := os.WriteFile(rec, []byte(`{"user":{"uid":4999,"gid":4999}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if ue := f.alloc(a, "e"); ue != ub {
		t.Fatalf("e got %d, want %d, which d's record no longer names", ue, ub)
	}
}

func TestUIDAllocatorRefusesBadRanges(t *testing.T) {
	for _, tc := range []struct {
		name        string
		base, count uint32
	}{{"root", 0, 10}, {"empty", 5000, 0}, {"past 2^32-1", 1<<32 - 5, 10}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := newUIDAllocator(t.TempDir(), tc.base, tc.count, "/x"); err == nil {
				t.Fatalf("range %d+%d accepted", tc.base, tc.count)
			}
		})
	}
}

// recoverUser at a driver's start: a record without a uid (written before
// per-VM users) gets one, a record whose uid another VM holds now gets
// another, a record whose claim is intact keeps its uid; every change is
// saved.
func TestRecoverUser(t *testing.T) {
	f := newAllocFixture(t)
	d := &Driver{cfg: Config{StateDir: f.state}, log: testLogger(t), users: f.allocator(8)}
	rec := func(id string, u *vmUser) *record {
		f.vmDir(id, false)
		r := &record{Config: hypervisorConfig(id), User: u}
		mustDo(t, "save", d.saveRecord(r))
		return r
	}
	holder := f.alloc(d.users, "holder") // holds the uid "stolen" claims
	mustDo(t, "save holder", d.saveRecord(&record{Config: hypervisorConfig("holder"), User: &vmUser{holder, holder}}))
	kept := f.alloc(d.users, "kept")

	for _, tc := range []struct {
		name    string
		r       *record
		wantUID func(uint32) bool
	}{
		{"no uid yet", rec("old", nil), func(u uint32) bool { return u != holder && u != kept }},
		{"uid taken", rec("stolen", &vmUser{holder, holder}), func(u uint32) bool { return u != holder && u != kept }},
		{"claim intact", rec("kept", &vmUser{kept, kept}), func(u uint32) bool { return u == kept }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustDo(t, "recoverUser", d.recoverUser(tc.r, 0))
			if tc.r.User == nil || !tc.wantUID(tc.r.User.UID) {
				t.Fatalf("uid after recovery: %+v", tc.r.User)
			}
			saved, err := d.loadRecord(tc.r.Config.ID)
			mustDo(t, "load", err)
			if saved.User == nil || *saved.User != *tc.r.User {
				t.Fatalf("saved record says %+v, want %+v", saved.User, tc.r.User)
			}
		})
	}
}

func hypervisorConfig(id string) hypervisor.VMConfig { return hypervisor.VMConfig{ID: id} }

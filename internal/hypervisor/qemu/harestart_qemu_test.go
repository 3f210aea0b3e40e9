package qemu

import (
	"context"
	"errors"
	"testing"

	"github.com/vpool/vpool/internal/hypervisor"
)

// An HA restart on a shared pool (issue 15): the failed host's QEMU still
// holds the disk (a partition, before its agent fenced itself), so the
// new host's QEMU is refused by the image lock; once the old QEMU is
// killed (the self-fence) the new host adopts and boots the disk; the old
// host's driver then refuses to start the VM again (the owner record
// names the new host). Before, the new host's Create was refused (the
// directory is another host's) and the old host could start at will.
func TestHARestartAdoptsSharedDisks(t *testing.T) {
	t.Parallel()
	g := heavy(t)
	shared := shortTempDir(t)
	old, nu := migPair(t, false, shared)
	ctx := context.Background()
	cfg := vmConfig(g, "harestart", "vpool.tick=1")
	bootGuest(t, old, cfg)

	adopt := cfg
	adopt.AdoptEpoch = 1
	mustDo(t, "Create (adopting)", nu.Create(ctx, adopt))
	assertOwner(t, nu, shared, cfg.ID)
	if err := nu.Start(ctx, cfg.ID); err == nil {
		t.Fatal("a second QEMU opened a disk the first still runs: QEMU's image lock did not hold")
	}
	mustDo(t, "Kill (self-fence)", old.Kill(ctx, cfg.ID))
	mustDo(t, "Start", nu.Start(ctx, cfg.ID))
	waitReady(t, nu, cfg.ID)
	if err := old.Start(ctx, cfg.ID); !errors.Is(err, hypervisor.ErrBadState) {
		t.Fatalf("the fenced host started the VM again: %v, want ErrBadState", err)
	}
	if infos, _ := old.List(ctx); len(infos) == 1 && infos[0].State == hypervisor.StateRunning {
		t.Fatal("the fenced host runs the VM")
	}
}

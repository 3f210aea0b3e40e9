package sim_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
)

// TestNetMigration moves VMs between hosts without a shared Registry (as
// between two `vpool agent --driver sim` processes), over TCP on
// loopback: a running VM arrives running and persisted, a stopped one
// stopped; a target that drops its reservation mid-transfer fails the
// migration and leaves the VM running on the source; a target that never
// answers the switchover leaves the source's copy paused with
// ErrOutcomeUnknown.
func TestNetMigration(t *testing.T) {
	tests := []struct {
		name      string
		start     bool
		drop      bool // the target deletes its reservation during the pre-copy
		noAnswer  bool // the address points at a listener that never answers
		wantState hypervisor.State
		wantErr   error
	}{
		{name: "live", start: true, wantState: hypervisor.StateRunning},
		{name: "cold", wantState: hypervisor.StateStopped},
		{name: "target-gone", start: true, drop: true, wantErr: errAny},
		{name: "no-answer", start: true, noAnswer: true, wantErr: hypervisor.ErrOutcomeUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			src := sim.MustHost(sim.Config{Name: "src", MigrationHost: "127.0.0.1", MigrateDelay: 200 * time.Millisecond}).Driver()
			dstFile := filepath.Join(dir, "dst.json")
			dstHost, err := sim.NewHost(sim.Config{Name: "dst", MigrationHost: "127.0.0.1", StateFile: dstFile})
			mustSim(t, err)
			dst := dstHost.Driver()
			c := cfg("mover", 2, model.GiB, 10*model.GiB)
			mustSim(t, src.Create(ctx, c))
			if tt.start {
				mustSim(t, src.Start(ctx, c.ID))
			}
			addr, err := dst.MigrateIn(ctx, c)
			mustSim(t, err)
			if tt.noAnswer {
				addr = silentTarget(t, c.ID)
			}
			if tt.drop {
				go func() { time.Sleep(60 * time.Millisecond); _ = dst.Delete(ctx, c.ID) }()
			}
			_, err = src.MigrateOut(ctx, c.ID, addr, hypervisor.MigrateOptions{}, nil)
			if tt.wantErr != nil {
				if err == nil || (tt.wantErr != errAny && !errors.Is(err, tt.wantErr)) {
					t.Fatalf("MigrateOut: %v, want %v", err, tt.wantErr)
				}
				want := hypervisor.StateRunning
				if tt.noAnswer {
					want = hypervisor.StatePaused
				}
				if in := listed(t, src, c.ID); in == nil || in.State != want {
					t.Fatalf("source after the failure: %+v, want %s", in, want)
				}
				if !tt.noAnswer {
					if in := listed(t, dst, c.ID); in != nil {
						t.Fatalf("target lists %+v after the failure", in)
					}
				}
				return
			}
			mustSim(t, err)
			if in := listed(t, src, c.ID); in != nil {
				t.Fatalf("source still lists %+v", in)
			}
			if in := listed(t, dst, c.ID); in == nil || in.State != tt.wantState {
				t.Fatalf("target lists %+v, want %s", in, tt.wantState)
			}
			again, err := sim.NewHost(sim.Config{Name: "dst", StateFile: dstFile}) // the target process restarted
			mustSim(t, err)
			if in := listed(t, again.Driver(), c.ID); in == nil || in.State != tt.wantState {
				t.Fatalf("target's state file holds %+v, want %s", in, tt.wantState)
			}
		})
	}
}

// silentTarget is an address whose listener reads the switchover and
// hangs up without answering, as a target process killed at that moment.
func silentTarget(t *testing.T, id string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustSim(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = bufio.NewReader(conn).ReadBytes('\n')
		conn.Close()
	}()
	return "simtcp://" + ln.Addr().String() + "/" + id
}

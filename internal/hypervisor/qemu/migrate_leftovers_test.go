package qemu

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/qmp"
)

// TestMain lets the test binary act as a second agent process
// (helperMigrateOut) when the environment asks for it.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "migrate-out" {
		os.Exit(helperMigrateOut())
	}
	os.Exit(m.Run())
}

// helperEnv makes the test binary run helperMigrateOut instead of tests.
const helperEnv = "VPOOL_QEMU_TEST_HELPER"

// helperMigrateOut is a second agent: a driver on the state dir in
// VPOOL_HELPER_STATE migrates VPOOL_HELPER_ID to VPOOL_HELPER_ADDR and
// prints every stage it enters; the test kills it mid-way.
func helperMigrateOut() int {
	cfg := Config{StateDir: os.Getenv("VPOOL_HELPER_STATE"), Network: NetUser, Accel: "auto",
		MigrationTLSDir: os.Getenv("VPOOL_HELPER_TLS")}
	d, err := New(cfg)
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	last := ""
	opts := hypervisor.MigrateOptions{BandwidthBps: 4 << 20, NoEscalation: true, Timeout: 5 * time.Minute}
	_, err = d.MigrateOut(context.Background(), os.Getenv("VPOOL_HELPER_ID"), os.Getenv("VPOOL_HELPER_ADDR"), opts,
		func(p hypervisor.MigrationProgress) {
			if p.Stage != last {
				last = p.Stage
				fmt.Println("STAGE", p.Stage)
			}
		})
	fmt.Println("DONE", err)
	return 0
}

// TestReattachCleansMigrationLeftovers kills the source agent (a second
// process) mid-migration — while the disks are mirrored, and while memory
// is copied with the mirror still running — then restarts the source
// driver: re-attach must leave no disk mirror, NBD client node, running
// migration or TLS credentials in the source QEMU, so that the next
// migration succeeds (issue 13: "Duplicate nodes with
// node-name='nbd-vd0'").
func TestReattachCleansMigrationLeftovers(t *testing.T) {
	for _, stage := range []string{hypervisor.MigrationStageDisks, hypervisor.MigrationStagePreCopy} {
		t.Run("killed-at-"+stage, func(t *testing.T) {
			t.Parallel()
			reattachAfterAgentKill(t, stage)
		})
	}
}

// reattachAfterAgentKill is TestReattachCleansMigrationLeftovers with the
// source agent killed as it enters stage.
func reattachAfterAgentKill(t *testing.T, stage string) {
	g := heavy(t)
	src, dst := migPair(t, true, "")
	ctx := context.Background()
	vc := vmConfig(g, "leftover-"+stage)
	bootGuest(t, src, vc)
	srcCfg := src.cfg
	agentGone(src) // this agent hands over to the helper process
	addr, err := dst.MigrateIn(ctx, vc)
	mustDo(t, "MigrateIn", err)

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=migrate-out", "VPOOL_HELPER_STATE="+srcCfg.StateDir,
		"VPOOL_HELPER_TLS="+srcCfg.MigrationTLSDir, "VPOOL_HELPER_ID="+vc.ID, "VPOOL_HELPER_ADDR="+addr)
	out, err := cmd.StdoutPipe()
	mustDo(t, "pipe", err)
	cmd.Stderr = os.Stderr
	mustDo(t, "start the helper agent", cmd.Start())
	stages := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			stages <- sc.Text()
		}
		close(stages)
	}()
	for seen := false; !seen; {
		select {
		case s, ok := <-stages:
			if !ok || strings.HasPrefix(s, "DONE") || strings.HasPrefix(s, "ERROR") {
				t.Fatalf("the helper agent ended before stage %s: %q", stage, s)
			}
			seen = s == "STAGE "+stage
		case <-time.After(2 * time.Minute):
			t.Fatalf("the helper agent never reached stage %s", stage)
		}
	}
	mustDo(t, "kill the helper agent", cmd.Process.Kill())
	cmd.Wait()
	waitGone(t, dst, vc.ID) // the target drops its copy by itself

	src2 := newDriver(t, srcCfg)
	if st := infoOfVM(t, src2, vc.ID).State; st != hypervisor.StateRunning {
		t.Fatalf("source after re-attach: %s, want running", st)
	}
	v, err := src2.get(vc.ID)
	mustDo(t, "get", err)
	q := v.proc.qmp
	var nodes []struct {
		NodeName string `json:"node-name"`
	}
	mustDo(t, "nodes", q.Execute(ctx, "query-named-block-nodes", qmp.Args{"flat": true}, &nodes))
	for _, n := range nodes {
		if strings.HasPrefix(n.NodeName, "nbd-") {
			t.Errorf("NBD client node %s left on the source after re-attach", n.NodeName)
		}
	}
	jobs, err := q.QueryBlockJobs(ctx)
	mustDo(t, "jobs", err)
	if len(jobs) > 0 {
		t.Errorf("block jobs left on the source after re-attach: %+v", jobs)
	}
	var mi migInfo
	mustDo(t, "query-migrate", q.Execute(ctx, "query-migrate", nil, &mi))
	if migrationBusy(mi.Status) {
		t.Errorf("a migration is still %s on the source after re-attach", mi.Status)
	}
	var objs []struct {
		Name string `json:"name"`
	}
	mustDo(t, "objects", q.Execute(ctx, "qom-list", qmp.Args{"path": "/objects"}, &objs))
	for _, o := range objs {
		if o.Name == tlsClientObj {
			t.Errorf("the migration's TLS credentials are left on the source")
		}
	}

	// The next migration goes through.
	addr, err = dst.MigrateIn(ctx, vc)
	mustDo(t, "MigrateIn again", err)
	res, err := src2.MigrateOut(ctx, vc.ID, addr, hypervisor.MigrateOptions{}, nil)
	mustDo(t, "the next migration", err)
	t.Logf("next migration: %s total, %s downtime", res.Total, res.Downtime)
	if st := infoOfVM(t, dst, vc.ID).State; st != hypervisor.StateRunning {
		t.Fatalf("target after the next migration: %s", st)
	}
}

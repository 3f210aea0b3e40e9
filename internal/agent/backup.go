package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/backup"
	"github.com/vpool/vpool/internal/backup/repo"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// The agent's side of backups and restores (docs/backup.md): it polls
// the jobs of its host, runs each once in this process (backup.Backup
// reads the VM's disks through the driver's Backupper straight into the
// repository; backup.Restore writes them back), and reports progress and
// the outcome. A backup found running that this process did not start
// (the agent restarted) is reported failed: it cannot be resumed, and
// the next one covers its changes.

// bootCheckTimeout bounds the wait for a restored VM to be up (a var
// for tests); bootCheckPoll is how often it looks.
var (
	bootCheckTimeout = 5 * time.Minute
	bootCheckPoll    = time.Second
)

type backups struct {
	a       *Agent
	mu      sync.Mutex
	running map[string]bool // backup or restore key → a worker runs it
	started map[string]bool // started in this process (not to be failed as orphans)
}

func (a *Agent) backupLoop(ctx context.Context) {
	bk := &backups{a: a, running: map[string]bool{}, started: map[string]bool{}}
	var wg sync.WaitGroup
	defer wg.Wait()
	bo := newBackoff(200*time.Millisecond, 10*time.Second)
	var after int64
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, a.cfg.PollWait+15*time.Second)
		var ab api.AgentBackups
		wait := min(a.cfg.PollWait, a.cfg.StatusInterval) // restores also wait on VM placement
		err := a.client.do(pctx, http.MethodGet, fmt.Sprintf("%s/backups?after=%d&wait=%s", api.AgentPrefix, after, wait), nil, &ab)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.log.Warn("backups poll failed", "err", err)
			if sleepCtx(ctx, bo.next()) != nil {
				return
			}
			continue
		}
		bo.reset()
		after = ab.Revision
		for _, j := range ab.Backups {
			bk.start(ctx, &wg, "b/"+j.Backup.Project+"/"+j.Backup.Name, func(ctx context.Context) { bk.runBackup(ctx, j) })
		}
		for _, j := range ab.Restores {
			bk.start(ctx, &wg, "r/"+j.Restore.Project+"/"+j.Restore.Name, func(ctx context.Context) { bk.runRestore(ctx, j) })
		}
	}
}

func (bk *backups) start(ctx context.Context, wg *sync.WaitGroup, key string, job func(context.Context)) {
	bk.mu.Lock()
	defer bk.mu.Unlock()
	if bk.running[key] {
		return
	}
	bk.running[key] = true
	wg.Go(func() {
		defer func() {
			bk.mu.Lock()
			delete(bk.running, key)
			bk.mu.Unlock()
		}()
		job(ctx)
	})
}

// report sends a report, retrying a transient failure for a while.
func (bk *backups) report(ctx context.Context, path string, rep any) error {
	var err error
	for i := 0; i < 10; i++ {
		if err = bk.a.client.do(ctx, http.MethodPut, path, rep, nil); err == nil {
			return nil
		}
		if s := httpStatus(err); s >= 400 && s < 500 {
			return err
		}
		if sleepCtx(ctx, time.Second) != nil {
			return err
		}
	}
	return err
}

func openRepo(ctx context.Context, a api.RepoAccess, host string, readOnly bool) (*repo.Repo, error) {
	key, err := repo.ParseKey([]byte(a.Key))
	if err != nil {
		return nil, err
	}
	be, err := repo.Location{Path: a.Path, URL: a.URL, AccessKey: a.S3AccessKey, SecretKey: a.S3SecretKey}.Backend()
	if err != nil {
		return nil, err
	}
	return repo.Open(ctx, be, repo.Options{Key: key, Cluster: a.Cluster, ReadOnly: readOnly || a.ReadOnly, Host: host})
}

// backupBusyWait is how long a backup waits for a GC that holds its
// repository before it fails (a GC of a large repository takes minutes).
const backupBusyWait = 30 * time.Minute

func (bk *backups) runBackup(ctx context.Context, j api.AgentBackupJob) {
	a := bk.a
	b := j.Backup
	path := fmt.Sprintf("%s/backups/%s/%s", api.AgentPrefix, url.PathEscape(b.Project), url.PathEscape(b.Name))
	key := "b/" + b.Project + "/" + b.Name
	bk.mu.Lock()
	mine := bk.started[key]
	bk.started[key] = true
	bk.mu.Unlock()
	if b.Phase == model.BackupRunning && !mine {
		bk.report(ctx, path, api.BackupReport{Phase: model.BackupFailed, Progress: b.Progress,
			Error: "the agent restarted during the backup; the next backup covers its changes"})
		return
	}
	fail := func(err error) {
		a.log.Warn("backup failed", "backup", b.Name, "vm", b.Project+"/"+b.VM, "err", err)
		bk.report(context.WithoutCancel(ctx), path, api.BackupReport{Phase: model.BackupFailed, Error: err.Error()})
	}
	if err := bk.report(ctx, path, api.BackupReport{Phase: model.BackupRunning}); err != nil {
		a.log.Warn("backup report failed", "backup", b.Name, "err", err)
		return
	}
	bu, ok := a.cfg.Driver.(hypervisor.Backupper)
	if !ok {
		fail(fmt.Errorf("the %s driver cannot back up VMs: %w", a.cfg.Driver.Name(), hypervisor.ErrUnsupported))
		return
	}
	rp, err := openRepo(ctx, j.Repo, a.cfg.HostName, false)
	if err != nil {
		fail(err)
		return
	}
	var parent *repo.Manifest
	var reasons []string
	if b.Parent != "" {
		if parent, err = rp.ReadManifest(ctx, b.Parent); err != nil {
			parent = nil
			reasons = append(reasons, fmt.Sprintf("the parent backup %s cannot be read from the repository", b.Parent))
		}
	}
	spec, _ := json.Marshal(b.Spec)
	prog, waiting := newThrottle(time.Second), newThrottle(time.Minute)
	m, err := backup.Backup(ctx, bu, vmID(b.Project, b.VM), rp, backup.Job{ID: b.Name, Project: b.Project, VM: b.VM,
		Parent: parent, Spec: spec, Clock: a.cfg.Clock, BusyWait: backupBusyWait,
		Freeze: true, RateLimit: int64(b.Limits.RateMiBps) << 20, Workers: b.Limits.Workers,
		Waiting: func(err error) {
			// a report now and then keeps the backup from looking stalled
			if waiting.ok() {
				a.log.Info("backup waits for the repository", "backup", b.Name, "why", err)
				bk.report(ctx, path, api.BackupReport{Phase: model.BackupRunning})
			}
		},
		Progress: func(p backup.Progress) {
			if prog.ok() {
				bk.report(ctx, path, api.BackupReport{Phase: model.BackupRunning, Progress: model.Progress{Done: p.Done, Total: p.Total}})
			}
		}})
	if err != nil {
		fail(err)
		return
	}
	if m.Reason != "" {
		reasons = append(reasons, m.Reason)
	}
	st := m.Stats
	rep := api.BackupReport{Phase: model.BackupCompleted, Kind: m.Kind, Parent: m.Parent, Reason: strings.Join(reasons, "; "),
		Consistency: m.Consistency, ConsistencyNote: m.ConsistencyNote,
		Progress: model.Progress{Done: st.ReadBytes, Total: st.ReadBytes},
		Stats: model.BackupStats{DiskBytes: st.DiskBytes, ReadBytes: st.ReadBytes, ParentBytes: st.ParentBytes, NewBytes: st.NewBytes,
			Chunks: st.Chunks, NewChunks: st.NewChunks, DurationMs: st.Duration.Milliseconds()}}
	if err := bk.report(context.WithoutCancel(ctx), path, rep); err != nil {
		a.log.Warn("backup completed but its report failed", "backup", b.Name, "err", err)
	}
}

func (bk *backups) runRestore(ctx context.Context, j api.AgentRestoreJob) {
	a := bk.a
	rs := j.Restore
	path := fmt.Sprintf("%s/restores/%s/%s", api.AgentPrefix, url.PathEscape(rs.Project), url.PathEscape(rs.Name))
	id := vmID(rs.Project, rs.VM)
	fail := func(err error) {
		a.log.Warn("restore failed", "restore", rs.Name, "vm", rs.Project+"/"+rs.VM, "err", err)
		bk.report(context.WithoutCancel(ctx), path, api.RestoreReport{Phase: model.RestoreFailed, Error: err.Error()})
	}
	if rs.Phase == model.RestorePending || rs.Phase == model.RestoreRunning {
		if !bk.waitState(ctx, id, hypervisor.StateStopped, 10*time.Minute) {
			if ctx.Err() == nil {
				fail(errors.New("the VM was not created stopped on this host within 10 minutes"))
			}
			return
		}
		if err := bk.restoreDisks(ctx, j, path); err != nil {
			fail(err)
			return
		}
		if !rs.Start && !rs.BootCheck {
			bk.report(ctx, path, api.RestoreReport{Phase: model.RestoreCompleted})
			return
		}
		if err := bk.report(ctx, path, api.RestoreReport{Phase: model.RestoreBooting}); err != nil {
			a.log.Warn("restore report failed", "restore", rs.Name, "err", err)
			return
		}
		a.wake()
	}
	start := time.Now()
	if !bk.waitState(ctx, id, hypervisor.StateRunning, 5*time.Minute) {
		if ctx.Err() == nil {
			fail(errors.New("the restored VM did not start within 5 minutes"))
		}
		return
	}
	var by string
	if rs.BootCheck {
		var err error
		if by, err = bk.bootCheck(ctx, id, rs); err != nil {
			fail(err)
			return
		}
	}
	bk.report(ctx, path, api.RestoreReport{Phase: model.RestoreCompleted, BootMs: time.Since(start).Milliseconds(), BootCheckedBy: by})
}

func (bk *backups) restoreDisks(ctx context.Context, j api.AgentRestoreJob, path string) error {
	a := bk.a
	rs := j.Restore
	bu, ok := a.cfg.Driver.(hypervisor.Backupper)
	if !ok {
		return fmt.Errorf("the %s driver cannot restore VMs: %w", a.cfg.Driver.Name(), hypervisor.ErrUnsupported)
	}
	if err := bk.report(ctx, path, api.RestoreReport{Phase: model.RestoreRunning}); err != nil {
		return err
	}
	rp, err := openRepo(ctx, j.Repo, a.cfg.HostName, true)
	if err != nil {
		return err
	}
	m, err := rp.ReadManifest(ctx, rs.Backup)
	if err != nil {
		return err
	}
	prog := newThrottle(time.Second)
	st, err := backup.Restore(ctx, bu, vmID(rs.Project, rs.VM), rp, m, func(p backup.Progress) {
		if prog.ok() {
			bk.report(ctx, path, api.RestoreReport{Phase: model.RestoreRunning, Progress: model.Progress{Done: p.Done, Total: p.Total}})
		}
	})
	if err != nil {
		return err
	}
	return bk.report(ctx, path, api.RestoreReport{Phase: model.RestoreRunning, Progress: model.Progress{Done: st.Bytes, Total: st.Bytes},
		BytesRestored: st.Bytes, RestoreMs: st.Duration.Milliseconds()})
}

// waitState polls the driver until the VM is in state want.
func (bk *backups) waitState(ctx context.Context, id string, want hypervisor.State, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		infos, err := bk.a.cfg.Driver.List(ctx)
		if err == nil {
			for _, in := range infos {
				if in.ID == id && in.State == want {
					return true
				}
			}
		}
		if sleepCtx(ctx, 500*time.Millisecond) != nil {
			return false
		}
	}
	return false
}

// bootCheck proves a started VM up and says how (model.BootCheckAgent
// or model.BootCheckMarker): by the QEMU guest agent's answer to a ping
// (real images with qemu-ga), by the ready marker on the console (the
// test guest, a cloud-init phone-home line), or — auto — by whichever
// comes first. It polls both once a second until bootCheckTimeout.
func (bk *backups) bootCheck(ctx context.Context, id string, rs model.Restore) (string, error) {
	marker := rs.ReadyMarker
	if marker == "" {
		marker = model.DefaultReadyMarker
	}
	mode := rs.BootCheckBy
	if mode == "" {
		mode = model.BootCheckAuto
	}
	drv := bk.a.cfg.Driver
	con, hasConsole := drv.(hypervisor.Console)
	ga, hasAgent := drv.(hypervisor.GuestAgent)
	useMarker := mode != model.BootCheckAgent && hasConsole
	useAgent := mode != model.BootCheckMarker && hasAgent
	switch {
	case mode == model.BootCheckAgent && !hasAgent:
		return "", fmt.Errorf("boot check: the %s driver cannot reach a guest agent", drv.Name())
	case mode == model.BootCheckMarker && !hasConsole, !useMarker && !useAgent:
		return "", fmt.Errorf("boot check: the %s driver has no console to read the ready marker from", drv.Name())
	}
	var agentErr error
	deadline := time.Now().Add(bootCheckTimeout)
	for time.Now().Before(deadline) {
		if useAgent {
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			agentErr = ga.GuestPing(pctx, id)
			cancel()
			switch {
			case agentErr == nil:
				return model.BootCheckAgent, nil
			case errors.Is(agentErr, hypervisor.ErrNoGuestAgent) && mode == model.BootCheckAuto:
				useAgent = false // no channel: the marker alone decides
			}
		}
		if useMarker {
			log, err := con.ConsoleLog(ctx, id, 1<<20)
			if err == nil && bytes.Contains(log, []byte(marker)) {
				return model.BootCheckMarker, nil
			}
		}
		if sleepCtx(ctx, bootCheckPoll) != nil {
			return "", ctx.Err()
		}
	}
	var what []string
	if useAgent || mode == model.BootCheckAgent {
		what = append(what, fmt.Sprintf("the guest agent did not answer (%v)", agentErr))
	}
	if useMarker {
		what = append(what, fmt.Sprintf("%q did not appear on the console", marker))
	}
	return "", fmt.Errorf("boot check: within %s %s", bootCheckTimeout, strings.Join(what, ", and "))
}

// throttle lets one call through per interval.
type throttle struct {
	every time.Duration
	mu    sync.Mutex
	last  time.Time
}

func newThrottle(every time.Duration) *throttle { return &throttle{every: every} }

func (t *throttle) ok() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if time.Since(t.last) < t.every {
		return false
	}
	t.last = time.Now()
	return true
}

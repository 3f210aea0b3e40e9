package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

// vm is one VM the driver knows. mu serialises every operation on it.
type vm struct {
	mu   sync.Mutex
	rec  *record
	proc *process // the live QEMU, nil when none
	// stuck is a live QEMU the driver could not attach to (reattach.go);
	// proc is nil meanwhile.
	stuck     *stuckQEMU
	committed atomic.Int64
	deleted   bool
	// arriving: an incoming migration that has not arrived (its VM
	// directory holds incomingMarker too, for a driver started later).
	arriving atomic.Bool
	// info and stats are the last answers of List and Stats, served while
	// an operation (a slow Stop) holds mu, so that the agent's converge
	// and heartbeat never wait behind one VM.
	info  atomic.Pointer[hypervisor.Info]
	stats atomic.Pointer[hypervisor.Stats]
	// live is the last QEMU started or attached for the VM, exited or
	// not: KillAll and List read it without waiting for mu.
	live atomic.Pointer[process]
}

// process is a live QEMU: our child, or one adopted from an earlier
// driver (cmd == nil). exited closes when it is gone.
type process struct {
	pid    int
	qmp    *qmp.Conn
	cmd    *exec.Cmd
	exited chan struct{}

	mu            sync.Mutex
	exitErr       error // from Wait, for our children
	guestShutdown bool  // SHUTDOWN with guest=true was seen
	ending        bool  // we asked it to end (stop, quit, kill)
	// watchdog is the guest watchdog's last firing in this QEMU (nil:
	// none); reported with the VM's info
	watchdog *model.WatchdogFiring
}

// lastWatchdog returns a copy of the last firing (nil: none).
func (p *process) lastWatchdog() *model.WatchdogFiring {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.watchdog == nil {
		return nil
	}
	w := *p.watchdog
	return &w
}

// runs reports whether pid is v's QEMU, attached or not.
func (v *vm) runs(pid int) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return (v.proc != nil && v.proc.pid == pid) || (v.stuck != nil && v.stuck.pid == pid)
}

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

func (p *process) setEnding() {
	p.mu.Lock()
	p.ending = true
	p.mu.Unlock()
}

// exitState classifies how the process ended.
func (p *process) exitState() hypervisor.State {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ending || p.guestShutdown {
		return hypervisor.StateStopped
	}
	if p.cmd != nil && p.exitErr == nil {
		return hypervisor.StateStopped // QEMU exits 0 after a guest power-off
	}
	return hypervisor.StateCrashed
}

// detach drops the driver's hold on a process that keeps running.
func (p *process) detach() { p.qmp.Close() }

// kill sends SIGKILL and waits (bounded) until the process is gone.
func (p *process) kill(ctx context.Context) error {
	p.setEnding()
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("qemu: kill %d: %w", p.pid, err)
	}
	return p.wait(ctx, 15*time.Second)
}

// quit asks QEMU to quit (5 s for the answer) and waits up to grace for
// it to exit, killing it after that. It fails when QEMU refused or had to
// be killed; a QEMU gone already is fine.
func (p *process) quit(ctx context.Context, grace time.Duration) error {
	p.setEnding()
	if p.hasExited() {
		return nil
	}
	var errs []error
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := p.qmp.Quit(qctx); err != nil && !errors.Is(err, qmp.ErrClosed) {
		errs = append(errs, err)
	}
	cancel()
	if err := p.wait(ctx, grace); err != nil {
		errs = append(errs, err)
		p.kill(ctx)
	}
	return errors.Join(errs...)
}

func (p *process) wait(ctx context.Context, limit time.Duration) error {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-p.exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("qemu: waiting for pid %d to exit: %w", p.pid, ctx.Err())
	case <-t.C:
		return fmt.Errorf("qemu: pid %d did not exit within %s", p.pid, limit)
	}
}

// launch starts QEMU for v with m, passing files as fds 3, 4, ... and
// returns once QMP answers. QEMU runs in its own session (Setsid) and
// without a parent-death signal, so it survives the agent.
func (d *Driver) launch(ctx context.Context, v *vm, m Machine, files []*os.File) (_ *process, err error) {
	bin, err := binary(d.cfg.QEMU)
	if err != nil {
		return nil, err
	}
	id := v.rec.Config.ID
	if err := m.Check(); err != nil {
		return nil, err
	}
	for _, s := range []string{m.QMPSocket, m.ConsoleSocket, m.PidFile, m.GuestAgentSocket} {
		if s == "" {
			continue
		}
		os.Remove(s)
		if err := os.MkdirAll(filepath.Dir(s), 0o700); err != nil {
			return nil, fmt.Errorf("qemu: %w", err)
		}
	}
	// One serial log per boot; the previous one is kept as serial.log.1.
	if m.SerialLog == d.SerialLog(id) {
		os.Rename(m.SerialLog, m.SerialLog+".1")
	}
	files, err = d.giveToVM(v.rec, v.arriving.Load(), &m, files)
	for _, f := range files {
		defer f.Close() // the child holds its own copies
	}
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(d.vmDir(id), "qemu.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "%s starting: %s %s\n", d.clock.Now().UTC().Format(time.RFC3339), bin, strings.Join(m.Args(), " "))
	cmd := exec.Command(bin, m.Args()...)
	cmd.Dir = d.vmDir(id)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = files
	if err := d.startAsVM(cmd, v.rec, m, bin); err != nil {
		return nil, fmt.Errorf("qemu: starting %s: %w", bin, err)
	}
	p := &process{pid: cmd.Process.Pid, cmd: cmd, exited: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.exitErr = err
		p.mu.Unlock()
		close(p.exited)
	}()
	conn, err := d.dialQMP(ctx, m.QMPSocket, p)
	if err != nil {
		p.kill(context.Background())
		// QEMU's log names its command line and host paths: it stays in
		// the agent's log; the error says only what failed.
		d.log.Warn("qemu: QEMU did not come up", "vm", id, "err", err, "qemu.log", logTail(logPath))
		return nil, fmt.Errorf("%w (QEMU's log is in the agent's log)", err)
	}
	p.qmp = conn
	d.watchEvents(p)
	return p, nil
}

// giveToVM gives the VM's user what its QEMU opens (vmuser.go): its
// files, the inherited key pipes (files so far), a serial log and pid
// file made for it, and listening sockets for its chardevs, appended to
// files and named in m. Without per-VM users QEMU makes its own.
func (d *Driver) giveToVM(rec *record, arriving bool, m *Machine, files []*os.File) ([]*os.File, error) {
	if d.users == nil || rec.User == nil {
		return files, nil
	}
	if err := d.own(rec, arriving); err != nil {
		return files, err
	}
	for _, f := range files {
		if err := d.giveFD(rec, f); err != nil {
			return files, err
		}
	}
	for _, p := range []string{m.SerialLog, m.PidFile} {
		if err := d.giveFile(rec, p); err != nil {
			return files, err
		}
	}
	for _, s := range []struct {
		path string
		fd   *int
	}{{m.QMPSocket, &m.QMPFD}, {m.ConsoleSocket, &m.ConsoleFD}, {m.GuestAgentSocket, &m.GuestAgentFD}} {
		if s.path == "" {
			continue
		}
		f, err := listenUnix(s.path)
		if err != nil {
			return files, err
		}
		files = append(files, f)
		*s.fd = 2 + len(files) // ExtraFiles[i] is fd 3+i
	}
	return files, nil
}

// dialQMP connects to a starting QEMU's QMP socket, retrying until it
// listens, the process dies, or 30 s pass.
func (d *Driver) dialQMP(ctx context.Context, path string, p *process) (*qmp.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		c, err := qmp.Dial(ctx, path, d.qmpOptions())
		if err == nil {
			return c, nil
		}
		if p.hasExited() {
			return nil, fmt.Errorf("qemu: QEMU exited during start-up")
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qemu: QMP did not come up: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (d *Driver) watchEvents(p *process) {
	sub := p.qmp.Subscribe("SHUTDOWN", "WATCHDOG")
	go func() {
		for ev := range sub.C {
			var data struct {
				Guest  bool   `json:"guest"`
				Action string `json:"action"`
			}
			ok := ev.DecodeData(&data) == nil
			switch {
			case ev.Name == "SHUTDOWN" && ok && data.Guest:
				p.mu.Lock()
				p.guestShutdown = true
				p.mu.Unlock()
			case ev.Name == "WATCHDOG": // the guest stopped feeding its watchdog
				d.log.Warn("qemu: the guest watchdog fired", "pid", p.pid, "action", data.Action)
				p.mu.Lock()
				n := 1
				if p.watchdog != nil {
					n = p.watchdog.Count + 1
				}
				p.watchdog = &model.WatchdogFiring{At: d.clock.Now().UTC(), Action: data.Action, Count: n}
				p.mu.Unlock()
			}
		}
	}()
}

// isOurQEMU checks that pid is alive and is the QEMU of vm id (guarding
// against pid reuse): its argv names this VM's pid file.
func (d *Driver) isOurQEMU(pid int, id string) bool {
	if pid <= 0 || !pidAlive(pid) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return bytes.Contains(b, []byte("\x00"+filepath.Join(d.vmDir(id), "qemu.pid")+"\x00"))
}

// pidAlive reports whether pid exists and any of its threads is not a
// zombie. A killed QEMU's main thread turns zombie while its other threads
// still exit; until the last one is gone its files, and so its image
// locks, are still held.
func pidAlive(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return false
	}
	for _, t := range tasks {
		if threadAlive(fmt.Sprintf("/proc/%d/task/%s/stat", pid, t.Name())) {
			return true
		}
	}
	return false
}

func threadAlive(statPath string) bool {
	b, err := os.ReadFile(statPath)
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	st := b[i+2]
	return st != 'Z' && st != 'X'
}

// ourQEMUs maps VM ids to the pids of QEMUs started on this state dir,
// found by their -pidfile argument.
func (d *Driver) ourQEMUs() map[string][]int {
	out := map[string][]int{}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	prefix := filepath.Join(d.cfg.StateDir, "vms") + "/"
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "-pidfile" && strings.HasPrefix(args[i+1], prefix) && strings.HasSuffix(args[i+1], "/qemu.pid") {
				id := strings.TrimSuffix(strings.TrimPrefix(args[i+1], prefix), "/qemu.pid")
				if pidAlive(pid) {
					out[id] = append(out[id], pid)
				}
			}
		}
	}
	return out
}

func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 800 {
		b = b[len(b)-800:]
	}
	return strings.TrimSpace(string(b))
}

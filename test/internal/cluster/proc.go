package cluster

import (
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one child process that can be killed and started again with
// the same command line; its output is appended to one log file.
type proc struct {
	tb   testing.TB
	path string
	args []string
	env  []string
	log  string

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	exited bool
	frozen bool
}

// start runs the process (again).
func (p *proc) start() {
	p.tb.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		p.tb.Fatal(err)
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = p.env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test
	if err := cmd.Start(); err != nil {
		f.Close()
		p.tb.Fatal(err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.done, p.exited = cmd, done, false
	p.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		f.Close()
		p.mu.Lock()
		p.exited = true
		p.mu.Unlock()
		close(done)
	}()
}

// Running says whether the process runs now.
func (p *proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.exited
}

// Pid is the running process's id (0 when none runs).
func (p *proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.exited {
		return 0
	}
	return p.cmd.Process.Pid
}

// Done is closed when the current process ends.
func (p *proc) Done() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// Kill9 ends the process as a crash would (SIGKILL) and waits for it.
func (p *proc) Kill9() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
	p.mu.Lock()
	p.frozen = false
	p.mu.Unlock()
}

// Freeze stops the process (SIGSTOP), as a host that hangs: it neither
// runs nor answers until Thaw.
func (p *proc) Freeze() { p.signalFrozen(syscall.SIGSTOP, true) }

// Thaw lets a frozen process run again (SIGCONT).
func (p *proc) Thaw() { p.signalFrozen(syscall.SIGCONT, false) }

func (p *proc) signalFrozen(sig syscall.Signal, frozen bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !p.exited {
		_ = p.cmd.Process.Signal(sig)
		p.frozen = frozen
	}
}

// Frozen says whether the process is stopped by Freeze.
func (p *proc) Frozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen && !p.exited
}

// Stop ends the process gracefully (SIGKILL after 10 s).
func (p *proc) Stop() {
	if !p.Running() {
		return
	}
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGCONT) // a frozen process cannot act on SIGTERM
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// DumpLog logs the tail of the process's output.
func (p *proc) DumpLog(name string) {
	b, _ := os.ReadFile(p.log)
	p.tb.Logf("--- %s log (tail) ---\n%s", name, tail(b, 8000))
}

// LogPath is the file the process's output goes to.
func (p *proc) LogPath() string { return p.log }

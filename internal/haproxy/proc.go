package haproxy

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNotRunning says a balancer's HAProxy is not running.
var ErrNotRunning = errors.New("haproxy: not running")

// proc is one HAProxy master (master-worker mode) in a namespace: one
// this runner started (done closes when it exits), or one it adopted
// from an earlier runner — an agent that restarted — known by its pid.
type proc struct {
	dir   string
	pid   int
	done  chan struct{} // nil when adopted
	err   error         // set when done closes
	cfg   string        // the configuration the master runs
	start time.Time
}

// Files in a balancer's runtime directory besides the configuration.
const (
	pidFile     = "master.pid"  // the master's pid
	runningFile = "running.cfg" // the configuration the master last loaded
	idFile      = "id"          // the balancer's ID, for adoption
)

func (p *proc) alive() bool {
	if p.done == nil {
		return masterAlive(p.pid, p.dir)
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// masterAlive says whether pid is a live HAProxy master of the
// configuration in dir (and not another process that reused the pid).
func masterAlive(pid int, dir string) bool {
	if pid <= 0 {
		return false
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(st), ')'); i < 0 || i+2 >= len(st) || st[i+2] == 'Z' || st[i+2] == 'X' {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return slices.Contains(strings.Split(string(cmdline), "\x00"), filepath.Join(dir, "haproxy.cfg"))
}

// adoptProc takes over the HAProxy master an earlier runner started for
// the configuration in dir, when it still runs and its master CLI
// answers: its connections go on. ErrNotRunning when there is none.
func adoptProc(ctx context.Context, dir string) (*proc, error) {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotRunning, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !masterAlive(pid, dir) {
		return nil, fmt.Errorf("%w: no live master (pid file %q)", ErrNotRunning, strings.TrimSpace(string(b)))
	}
	p := &proc{dir: dir, pid: pid, start: time.Now()}
	if _, err := p.cli(ctx, "show proc"); err != nil {
		// Alive but deaf: it cannot be reloaded or read. Stop it (its
		// connections drop) rather than run a second HAProxy beside it
		// on the same address (SO_REUSEPORT would split the traffic).
		p.stop()
		return nil, fmt.Errorf("%w: master %d does not answer on its CLI: stopped it: %v", ErrNotRunning, pid, err)
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, runningFile))
	p.cfg = string(cfg)
	return p, nil
}

func (p *proc) masterSock() string { return filepath.Join(p.dir, "master.sock") }

// startProc starts HAProxy's master for the configuration in dir, inside
// netns, and waits until its master CLI answers.
func startProc(ctx context.Context, bin, netns, dir, cfg string) (*proc, error) {
	if err := os.WriteFile(filepath.Join(dir, "haproxy.cfg"), []byte(cfg), 0o600); err != nil {
		return nil, fmt.Errorf("haproxy: write config: %w", err)
	}
	_ = os.Remove(filepath.Join(dir, "master.sock"))
	if _, err := os.Stat(filepath.Join(dir, "server-state")); err != nil {
		_ = os.WriteFile(filepath.Join(dir, "server-state"), nil, 0o600)
	}
	// `ip netns exec` execs HAProxy in place: the pid is the master's.
	// Its own process group, and no parent-death signal: HAProxy
	// outlives the agent, like the VMs, and the next agent adopts it.
	args := []string{"netns", "exec", netns, bin, "-W", "-S", filepath.Join(dir, "master.sock") + ",mode,600", "-f", filepath.Join(dir, "haproxy.cfg")}
	cmd := exec.Command("ip", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.OpenFile(filepath.Join(dir, "haproxy.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("haproxy: log: %w", err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("haproxy: start: %w", err)
	}
	p := &proc{dir: dir, pid: cmd.Process.Pid, done: make(chan struct{}), cfg: cfg, start: time.Now()}
	go func() { p.err = cmd.Wait(); logf.Close(); close(p.done) }()
	if err := os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(p.pid)), 0o600); err != nil {
		p.stop()
		return nil, fmt.Errorf("haproxy: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := p.cli(ctx, "show proc"); err == nil {
			p.loaded(cfg)
			return p, nil
		}
		if !p.alive() || time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, fmt.Errorf("haproxy: did not start: %s", tail(filepath.Join(dir, "haproxy.log")))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loaded records cfg as what the master runs, for a runner that adopts
// it. Losing it costs that runner one needless reload.
func (p *proc) loaded(cfg string) {
	if err := os.WriteFile(filepath.Join(p.dir, runningFile), []byte(cfg), 0o600); err != nil {
		_ = os.Remove(filepath.Join(p.dir, runningFile))
	}
}

// tail returns the end of a log file, for errors.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = "..." + s[len(s)-600:]
	}
	if s == "" {
		return "no output"
	}
	return s
}

// cli sends one command to the master CLI and returns the answer.
func (p *proc) cli(ctx context.Context, command string) (string, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "unix", p.masterSock())
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotRunning, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line := command + "; quit\n" // the master CLI keeps a connection open otherwise
	if command == "reload" {
		line = "reload\n" // the master re-executes itself and closes it
		_ = c.SetDeadline(time.Now().Add(time.Second))
	}
	if _, err := io.WriteString(c, line); err != nil {
		return "", fmt.Errorf("haproxy: master CLI: %w", err)
	}
	b, err := io.ReadAll(c)
	if err != nil && command != "reload" {
		return "", fmt.Errorf("haproxy: master CLI: %w", err)
	}
	return string(b), nil
}

// reloadGone is how long a master must look gone during a reload before
// the reload is said to have ended it.
const reloadGone = time.Second

// reload makes the master start a new worker with cfg: the new worker
// takes over the listening sockets, the old one finishes its
// connections (at most hard-stop-after). The servers' states are saved
// first, so the new worker starts with the members' health as it was.
func (p *proc) reload(ctx context.Context, cfg string) error {
	if st, err := p.cli(ctx, "@1 show servers state"); err == nil && strings.HasPrefix(strings.TrimSpace(st), "1") {
		_ = os.WriteFile(filepath.Join(p.dir, "server-state"), []byte(st), 0o600)
	}
	if err := os.WriteFile(filepath.Join(p.dir, "haproxy.cfg"), []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("haproxy: write config: %w", err)
	}
	before, _ := p.workers(ctx)
	if _, err := p.cli(ctx, "reload"); err != nil {
		return err
	}
	// The master re-executes itself; wait for a new current worker. An
	// adopted master is seen through /proc, where its command line is
	// briefly unreadable while it re-executes: it is taken for gone only
	// when it stays gone for reloadGone.
	deadline := time.Now().Add(10 * time.Second)
	var goneSince time.Time
	for time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		if ws, err := p.workers(ctx); err == nil && len(ws) > 0 && (len(before) == 0 || ws[0] != before[0]) {
			p.cfg = cfg
			p.loaded(cfg)
			return nil
		}
		switch {
		case p.alive():
			goneSince = time.Time{}
		case goneSince.IsZero():
			goneSince = time.Now()
		case time.Since(goneSince) > reloadGone:
			return fmt.Errorf("haproxy: reload ended the master: %s", tail(filepath.Join(p.dir, "haproxy.log")))
		}
	}
	return fmt.Errorf("haproxy: reload did not bring up a new worker: %s", tail(filepath.Join(p.dir, "haproxy.log")))
}

// workers lists the worker PIDs: the current one first, then old ones
// still finishing their connections.
func (p *proc) workers(ctx context.Context) ([]int, error) {
	out, err := p.cli(ctx, "show proc")
	if err != nil {
		return nil, err
	}
	var cur, old []int
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			section = line
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[1] != "worker" {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		if strings.Contains(section, "old") {
			old = append(old, pid)
		} else {
			cur = append(cur, pid)
		}
	}
	return append(cur, old...), nil
}

// ServerStat is one member as HAProxy sees it.
type ServerStat struct {
	// Health is up, down or unknown (no check result yet).
	Health string
	// Sessions are its open connections across every worker (the
	// current one and old ones finishing after a reload).
	Sessions int
	// Weight is its current weight (0 while it drains).
	Weight int
}

// stats reads every member's state and connections from all workers.
func (p *proc) stats(ctx context.Context) (map[string]ServerStat, error) {
	ws, err := p.workers(ctx)
	if err != nil {
		return nil, err
	}
	if len(ws) == 0 {
		return nil, fmt.Errorf("%w: no worker", ErrNotRunning)
	}
	out := map[string]ServerStat{}
	for i, pid := range ws {
		csvText, err := p.cli(ctx, fmt.Sprintf("@!%d show stat", pid))
		if err != nil {
			if i == 0 {
				return nil, err
			}
			continue // an old worker that just left
		}
		for name, st := range parseStat(csvText) {
			cur := out[name]
			cur.Sessions += st.Sessions
			if i == 0 {
				cur.Health, cur.Weight = st.Health, st.Weight
			}
			out[name] = cur
		}
	}
	return out, nil
}

// parseStat reads the backend servers of `show stat` (CSV).
func parseStat(text string) map[string]ServerStat {
	out := map[string]ServerStat{}
	text = strings.TrimPrefix(strings.TrimSpace(text), "# ")
	r := csv.NewReader(strings.NewReader(text))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) < 2 {
		return out
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	get := func(row []string, k string) string {
		if i, ok := col[k]; ok && i < len(row) {
			return row[i]
		}
		return ""
	}
	for _, row := range rows[1:] {
		if get(row, "pxname") != "members" || get(row, "svname") == "BACKEND" || get(row, "svname") == "FRONTEND" {
			continue
		}
		st := ServerStat{Health: "unknown"}
		st.Sessions, _ = strconv.Atoi(get(row, "scur"))
		st.Weight, _ = strconv.Atoi(get(row, "weight"))
		s := get(row, "status")
		switch {
		case strings.HasPrefix(s, "UP"), s == "NOLB", strings.HasPrefix(s, "DRAIN"):
			st.Health = "up"
		case strings.HasPrefix(s, "DOWN"):
			st.Health = "down"
		}
		out[get(row, "svname")] = st
	}
	return out
}

// stop ends the master and its workers (its process group).
func (p *proc) stop() {
	if p.pid <= 0 {
		return
	}
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	if !p.waitGone(3 * time.Second) {
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		p.waitGone(5 * time.Second)
	}
}

// waitGone waits until the master has ended, at most d.
func (p *proc) waitGone(d time.Duration) bool {
	if p.done != nil {
		select {
		case <-p.done:
			return true
		case <-time.After(d):
			return false
		}
	}
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !p.alive() {
			return true
		}
	}
	return !p.alive()
}

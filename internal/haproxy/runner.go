package haproxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/vpool/vpool/internal/netvirt"
)

// Runner serves a host's balancers: for each, a namespace whose veth
// "vip" holds the virtual IP and whose host end (Spec.Port) is a port
// of the network's bridge, and an HAProxy master in it. Ensure is
// idempotent: it creates what is missing, reloads HAProxy when the
// configuration changed and restarts it when it died.
//
// HAProxy outlives the runner, as VMs outlive their agent: Close leaves
// it running, and a new runner on the same Dir adopts every master it
// finds there (its pid file, its master CLI) on first use instead of
// starting another, so an agent restart drops no connection. Running
// lists adopted balancers too, so one deleted while the agent was away
// is removed by the next view.
type Runner struct {
	// Sys runs ip commands on the host (netvirt.Exec; with Netns set for
	// a "host" that is itself a namespace in tests).
	Sys netvirt.System
	// Bin is the haproxy binary (default "haproxy").
	Bin string
	// Dir holds one runtime directory per balancer (default /run/vpool/lb).
	Dir string
	// NetnsPrefix names the balancers' namespaces (default "vlb-");
	// several "hosts" on one machine need their own.
	NetnsPrefix string
	Log         *slog.Logger

	mu      sync.Mutex
	procs   map[string]*proc
	adopted bool // the masters under Dir were looked for
}

// Netns is the namespace of balancer id.
func (r *Runner) Netns(id string) string {
	h := sha256.Sum256([]byte(id))
	p := r.NetnsPrefix
	if p == "" {
		p = "vlb-"
	}
	return fmt.Sprintf("%s%x", p, h[:5])
}

func (r *Runner) base() string {
	if r.Dir == "" {
		return "/run/vpool/lb"
	}
	return r.Dir
}

func (r *Runner) dir(id string) string {
	h := sha256.Sum256([]byte(id))
	return filepath.Join(r.base(), fmt.Sprintf("%x", h[:8]))
}

// adoptAll takes over, once, the HAProxy masters an earlier runner left
// running under Dir (r.mu held).
func (r *Runner) adoptAll(ctx context.Context) {
	if r.adopted {
		return
	}
	r.adopted = true
	if r.procs == nil {
		r.procs = map[string]*proc{}
	}
	ents, err := os.ReadDir(r.base())
	if err != nil {
		return // none yet
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(r.base(), e.Name(), idFile))
		id := strings.TrimSpace(string(b))
		if err != nil || id == "" || r.dir(id) != filepath.Join(r.base(), e.Name()) || r.procs[id] != nil {
			continue
		}
		p, err := adoptProc(ctx, r.dir(id))
		if err != nil {
			r.log().Info("haproxy not adopted", "lb", id, "err", err)
			continue
		}
		r.procs[id] = p
		r.log().Info("haproxy adopted: its connections go on", "lb", id, "pid", p.pid)
	}
}

func (r *Runner) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

// Ensure makes the host serve s.
func (r *Runner) Ensure(ctx context.Context, s Spec) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.adoptAll(ctx)
	if err := r.plumb(ctx, s); err != nil {
		return err
	}
	dir := r.dir(s.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("haproxy: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, idFile), []byte(s.ID), 0o600); err != nil {
		return fmt.Errorf("haproxy: %w", err)
	}
	cfg := RenderConfig(s, dir)
	p := r.procs[s.ID]
	if p != nil && !p.alive() {
		r.log().Warn("haproxy exited, restarting", "lb", s.ID, "err", p.err, "log", tail(filepath.Join(dir, "haproxy.log")))
		p = nil
	}
	if p == nil {
		if ap, err := adoptProc(ctx, dir); err == nil {
			p = ap
			r.procs[s.ID] = p
			r.log().Info("haproxy adopted: its connections go on", "lb", s.ID, "pid", p.pid)
		}
	}
	if p == nil {
		bin := r.Bin
		if bin == "" {
			bin = "haproxy"
		}
		np, err := startProc(ctx, bin, r.Netns(s.ID), dir, cfg)
		if err != nil {
			return err
		}
		r.procs[s.ID] = np
		r.log().Info("haproxy started", "lb", s.ID, "netns", r.Netns(s.ID))
		return nil
	}
	if p.cfg == cfg {
		return nil
	}
	if err := p.reload(ctx, cfg); err != nil {
		return err
	}
	r.log().Info("haproxy reloaded", "lb", s.ID)
	return nil
}

// plumb makes the namespace and its veth: "vip" inside with the MAC and
// the virtual IP, the host end on the network's bridge. The bridge is
// the network's (netvirt makes it once the host's view has the
// balancer's port); until it exists Ensure fails and is retried.
func (r *Runner) plumb(ctx context.Context, s Spec) error {
	ns := r.Netns(s.ID)
	br := netvirt.BridgeName(s.VNI)
	if _, err := r.Sys.Run(ctx, netvirt.Cmd{Path: "ip", Args: []string{"link", "show", br}}); err != nil {
		return fmt.Errorf("haproxy: network bridge %s is not there yet: %w", br, err)
	}
	if _, err := r.Sys.Run(ctx, netvirt.Cmd{Path: "ip", Args: []string{"-n", ns, "link", "show", "vip"}}); err != nil {
		_, _ = r.Sys.Run(ctx, netvirt.Cmd{Path: "ip", Args: []string{"link", "del", s.Port}})
		_, _ = r.Sys.Run(ctx, netvirt.Cmd{Path: "ip", Args: []string{"netns", "del", ns}})
		mtu := strconv.Itoa(s.MTU)
		addr := netipPrefix(s)
		for _, c := range [][]string{
			{"netns", "add", ns},
			{"link", "add", s.Port, "mtu", mtu, "type", "veth", "peer", "name", "vip", "netns", ns},
			{"-n", ns, "link", "set", "vip", "address", s.MAC, "mtu", mtu, "up"},
			{"-n", ns, "addr", "add", addr, "dev", "vip"},
			{"-n", ns, "link", "set", "lo", "up"},
		} {
			if _, err := r.Sys.Run(ctx, netvirt.Cmd{Path: "ip", Args: c}); err != nil {
				return fmt.Errorf("haproxy: namespace of %s: %w", s.ID, err)
			}
		}
	}
	_, err := r.Sys.Run(ctx, netvirt.Cmd{Path: "ip", Args: []string{"link", "set", s.Port, "master", br, "mtu", strconv.Itoa(s.MTU), "up"}})
	return err
}

func netipPrefix(s Spec) string {
	return s.VIP.String() + "/" + strconv.Itoa(s.Subnet.Bits())
}

// Stats returns balancer id's members as HAProxy sees them.
func (r *Runner) Stats(ctx context.Context, id string) (map[string]ServerStat, error) {
	r.mu.Lock()
	r.adoptAll(ctx)
	p := r.procs[id]
	r.mu.Unlock()
	if p == nil || !p.alive() {
		return nil, ErrNotRunning
	}
	return p.stats(ctx)
}

// Running lists the balancers served (adopted ones included).
func (r *Runner) Running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.adoptAll(context.Background())
	out := make([]string, 0, len(r.procs))
	for id := range r.procs {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Remove stops balancer id's HAProxy and deletes its namespace (which
// deletes the veth) and runtime directory.
func (r *Runner) Remove(ctx context.Context, id, port string) error {
	r.mu.Lock()
	r.adoptAll(ctx)
	p := r.procs[id]
	delete(r.procs, id)
	r.mu.Unlock()
	if p != nil {
		p.stop()
	}
	var errs []error
	if _, err := r.Sys.Run(ctx, netvirt.Cmd{Path: "ip", Args: []string{"netns", "del", r.Netns(id)}}); err != nil && !strings.Contains(err.Error(), "No such file") {
		errs = append(errs, err)
	}
	if port != "" {
		_, _ = r.Sys.Run(ctx, netvirt.Cmd{Path: "ip", Args: []string{"link", "del", port}})
	}
	errs = append(errs, os.RemoveAll(r.dir(id)))
	return errors.Join(errs...)
}

// Close lets the runner go and leaves every HAProxy running with its
// connections (an agent that exits): the next runner on Dir adopts them.
func (r *Runner) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.procs, r.adopted = nil, false
}

// Shutdown stops every HAProxy the runner serves, adopted ones
// included; their namespaces and directories stay (tests, and a host
// that stops serving balancers for good).
func (r *Runner) Shutdown() {
	r.mu.Lock()
	r.adoptAll(context.Background())
	ps := r.procs
	r.procs, r.adopted = nil, false
	r.mu.Unlock()
	for _, p := range ps {
		p.stop()
	}
}

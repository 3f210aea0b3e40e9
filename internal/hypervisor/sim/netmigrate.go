package sim

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
)

// Migration between processes. Hosts of different processes (agents run
// as `vpool agent --driver sim`) share no Registry; with
// Config.MigrationHost set they migrate over TCP instead:
//
//   - the target (MigrateIn) reserves room as for a Registry migration
//     and listens on MigrationHost:0 for one sender; the address is
//     "simtcp://HOST:PORT/<id>";
//   - the source (MigrateOut) connects, simulates the pre-copy over
//     MigrateDelay (a target that hangs up fails it, the VM stays here
//     as it was), then switches over: it pauses its copy, sends the VM's
//     record and waits for the target's "ok";
//   - the target installs the VM (running if it ran), persists it, then
//     answers "ok"; the source deletes its copy.
//
// As with QEMU, a switchover whose answer never comes (the target process
// died, the connection broke) leaves the source's copy paused and wraps
// hypervisor.ErrOutcomeUnknown: the VM may run on the target.

const netScheme = "simtcp://"

// netTransfer is what the source sends at the switchover.
type netTransfer struct {
	ID    string           `json:"id"`
	State hypervisor.State `json:"state"` // the VM's state before the source paused it
	Cold  bool             `json:"cold"`
	VM    vm               `json:"vm"`
}

// netReplyTimeout bounds the wait for the target's answer.
const netReplyTimeout = 30 * time.Second

// migrateInNet listens for the sender of cfg.ID; the reservation is
// already made.
func (h *Host) migrateInNet(id string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(h.cfg.MigrationHost, "0"))
	if err != nil {
		return "", fmt.Errorf("sim: migrate in %s: %w", id, err)
	}
	in := &netIncoming{ln: ln}
	h.mu.Lock()
	if h.listeners == nil {
		h.listeners = map[string]*netIncoming{}
	}
	h.dropListenerLocked(id)
	h.listeners[id] = in
	h.mu.Unlock()
	go h.receive(in, id)
	return netScheme + ln.Addr().String() + "/" + id, nil
}

// netIncoming is a target's listener for one VM and the sender it
// serves.
type netIncoming struct {
	ln   net.Listener
	conn net.Conn
}

// dropListenerLocked stops waiting for id's sender and hangs up on it.
func (h *Host) dropListenerLocked(id string) {
	if in := h.listeners[id]; in != nil {
		in.ln.Close()
		if in.conn != nil {
			in.conn.Close()
		}
		delete(h.listeners, id)
	}
}

// receive serves senders on in's listener until one hands the VM over or
// the reservation is dropped (Delete closes the listener and the
// connection).
func (h *Host) receive(in *netIncoming, id string) {
	defer in.ln.Close()
	for {
		conn, err := in.ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		if h.listeners[id] != in {
			h.mu.Unlock()
			conn.Close()
			return
		}
		in.conn = conn
		h.mu.Unlock()
		if h.receiveOne(conn, id) {
			return
		}
	}
}

// receiveOne reads one sender; it reports whether the VM arrived. The
// connection stays open through the pre-copy: the source notices a
// target that hangs up.
func (h *Host) receiveOne(conn net.Conn, id string) bool {
	defer conn.Close()
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		return false
	}
	var t netTransfer
	if err := json.Unmarshal(line, &t); err != nil || t.ID != id {
		return false
	}
	h.mu.Lock()
	cur, ok := h.vms[id]
	if !ok || !cur.Incoming {
		h.mu.Unlock()
		return false // the reservation was dropped: no answer, the source keeps its copy
	}
	moved := t.VM
	now := h.cfg.Clock.Now()
	moved.Incoming, moved.Touched = false, now
	if t.Cold {
		moved.State, moved.Pid, moved.StartedAt = hypervisor.StateStopped, 0, time.Time{}
	} else {
		h.startLocked(&moved, now)
		moved.State = t.State
	}
	h.vms[id] = &moved
	delete(h.listeners, id)
	err = h.saveLocked()
	h.mu.Unlock()
	if err != nil {
		return false
	}
	_, err = conn.Write([]byte("ok\n"))
	return err == nil
}

// migrateOutNet sends id to a target of another process.
func (d *Driver) migrateOutNet(ctx context.Context, id, addr string, opts hypervisor.MigrateOptions, progress func(hypervisor.MigrationProgress)) (hypervisor.MigrationResult, error) {
	h := d.h
	hostPort, wantID, ok := strings.Cut(strings.TrimPrefix(addr, netScheme), "/")
	if !strings.HasPrefix(addr, netScheme) || !ok || wantID != id {
		return hypervisor.MigrationResult{}, fmt.Errorf("sim: migrate out %s: bad target address %q", id, addr)
	}
	h.mu.Lock()
	v, err := h.getLocked("migrate out", id)
	var total int64
	cold := false
	if err == nil {
		cold = v.State == hypervisor.StateStopped || v.State == hypervisor.StateCrashed
		total = int64(v.Config.Spec.Memory)
		if cold {
			total = int64(v.Config.Spec.DiskSize())
		} else if v.State != hypervisor.StateRunning && v.State != hypervisor.StatePaused {
			err = fmt.Errorf("sim: migrate out %s: vm is %s: %w", id, v.State, hypervisor.ErrBadState)
		}
	}
	h.mu.Unlock()
	if err != nil {
		return hypervisor.MigrationResult{}, err
	}
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", hostPort)
	if err != nil {
		return hypervisor.MigrationResult{}, fmt.Errorf("sim: migrate out %s: nobody waits at %q: %w", id, addr, err)
	}
	defer conn.Close()
	if err := d.preCopyNet(ctx, conn, id, addr, total, cold, progress); err != nil {
		return hypervisor.MigrationResult{}, err
	}
	return d.switchoverNet(ctx, conn, id, total, cold, opts)
}

// preCopyNet simulates the transfer before the switchover: four rounds
// over MigrateDelay (one over a quarter of it, cold), checking that the
// target still listens.
func (d *Driver) preCopyNet(ctx context.Context, conn net.Conn, id, addr string, total int64, cold bool, progress func(hypervisor.MigrationProgress)) error {
	h := d.h
	rounds := 4
	if cold {
		rounds = 1
		if progress != nil {
			progress(hypervisor.MigrationProgress{Stage: hypervisor.MigrationStageDisks, DiskTotal: total})
		}
	}
	for i := 1; i <= rounds; i++ {
		if err := h.wait(ctx, h.cfg.MigrateDelay/4); err != nil {
			return err
		}
		if !peerListens(conn) {
			return fmt.Errorf("sim: migrate out %s: the target at %q went away mid-transfer", id, addr)
		}
		if progress == nil {
			continue
		}
		done := total * int64(i) / int64(rounds)
		if cold {
			progress(hypervisor.MigrationProgress{Stage: hypervisor.MigrationStageDisks, DiskTransferred: done, DiskTotal: total})
		} else {
			progress(hypervisor.MigrationProgress{Transferred: done, Remaining: total - done, Total: total})
		}
	}
	return nil
}

// peerListens says whether the other end of conn is still open: a short
// read that times out means it is (the target sends nothing before the
// switchover).
func peerListens(conn net.Conn) bool {
	_ = conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	var b [1]byte
	_, err := conn.Read(b[:])
	_ = conn.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// switchoverNet pauses the source's copy, hands the VM over and deletes
// the copy once the target answered.
func (d *Driver) switchoverNet(ctx context.Context, conn net.Conn, id string, total int64, cold bool, opts hypervisor.MigrateOptions) (hypervisor.MigrationResult, error) {
	h := d.h
	h.mu.Lock()
	v, err := h.getLocked("migrate out", id)
	if err != nil {
		h.mu.Unlock()
		return hypervisor.MigrationResult{}, err
	}
	h.touch(v, h.cfg.Clock.Now())
	t := netTransfer{ID: id, State: v.State, Cold: cold}
	if v.State == hypervisor.StateRunning {
		v.State = hypervisor.StatePaused
	}
	t.VM = *v
	err = h.saveLocked()
	h.mu.Unlock()
	if err != nil {
		return hypervisor.MigrationResult{}, err
	}
	b, _ := json.Marshal(t)
	deadline := time.Now().Add(netReplyTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	_, werr := conn.Write(append(b, '\n'))
	reply, rerr := bufio.NewReader(conn).ReadString('\n')
	if werr != nil || rerr != nil || reply != "ok\n" {
		return hypervisor.MigrationResult{}, fmt.Errorf("sim: migrate out %s: no answer after the switchover (write %v, read %v): %w",
			id, werr, rerr, hypervisor.ErrOutcomeUnknown)
	}
	h.mu.Lock()
	delete(h.vms, id)
	err = h.saveLocked()
	h.mu.Unlock()
	res := netResult(total, cold, opts)
	return res, err
}

// netResult is the result Registry migrations report, for the same sizes.
func netResult(total int64, cold bool, opts hypervisor.MigrateOptions) hypervisor.MigrationResult {
	bw := opts.BandwidthBps
	if bw <= 0 {
		bw = defaultBandwidth
	}
	dur := time.Duration(float64(total) / float64(bw) * float64(time.Second))
	if cold {
		return hypervisor.MigrationResult{Total: max(dur, time.Millisecond), Bytes: total, DiskBytes: total,
			Stage: hypervisor.MigrationStageDisks, Cold: true}
	}
	downtime := 20 * time.Millisecond
	if opts.DowntimeLimit > 0 && opts.DowntimeLimit < downtime {
		downtime = opts.DowntimeLimit
	}
	return hypervisor.MigrationResult{Total: max(dur, downtime), Downtime: downtime, Bytes: total, RAMBytes: total}
}

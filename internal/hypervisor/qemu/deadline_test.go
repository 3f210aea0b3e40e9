package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/qmp"
)

// silentMonitor is a QMP peer that greets, answers the commands in
// answers and never answers any other: a stuck QEMU.
func silentMonitor(t *testing.T, answers map[string]string) string {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}}, "capabilities": []}}` + "\n"))
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					var r struct {
						Execute string          `json:"execute"`
						ID      json.RawMessage `json:"id"`
					}
					json.Unmarshal(sc.Bytes(), &r)
					ret, ok := answers[r.Execute]
					if r.Execute == "qmp_capabilities" {
						ret, ok = "{}", true
					}
					if ok {
						c.Write([]byte(`{"return": ` + ret + `, "id": ` + string(r.ID) + "}\n"))
					}
				}
			}()
		}
	}()
	return path
}

// stuckVM makes a driver with one VM whose QEMU is a `sleep` child and
// whose monitor answers only answers.
func stuckVM(t *testing.T, answers map[string]string) (*Driver, string) {
	t.Helper()
	cfg := Config{StateDir: shortTempDir(t), QMPTimeout: 100 * time.Millisecond}.withDefaults()
	d := &Driver{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, vms: map[string]*vm{}, hostID: "h"}
	d.keys = &FileKeys{Dir: filepath.Join(cfg.StateDir, "keys")}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	t.Cleanup(d.cancel)
	id := "test.stuck"
	if err := os.MkdirAll(d.vmDir(id), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{pid: cmd.Process.Pid, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-p.exited })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := qmp.Dial(ctx, silentMonitor(t, answers), d.qmpOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	p.qmp = conn
	rec := &record{Config: hypervisor.VMConfig{ID: id, Spec: model.VMSpec{VCPUs: 1, Memory: 128 * model.MiB}},
		Disks: []diskRec{{Name: "root", Index: 0, Dir: filepath.Join(cfg.StateDir, "pools", "default", id)}},
		Run:   &runRec{Pid: p.pid}}
	d.vms[id] = &vm{rec: rec, proc: p}
	return d, id
}

// TestStuckMonitorReleasesTheLock: every operation on a VM whose QEMU
// never answers QMP — the rollbacks after its failures included — ends,
// and leaves the VM's lock free, although the caller's context has no
// deadline.
func TestStuckMonitorReleasesTheLock(t *testing.T) {
	running := `{"running": true, "status": "running"}`
	tests := []struct {
		name    string
		answers map[string]string // commands the monitor still answers
		op      func(ctx context.Context, d *Driver, id string) error
	}{
		{"pause", nil, func(ctx context.Context, d *Driver, id string) error { return d.Pause(ctx, id) }},
		{"reboot", nil, func(ctx context.Context, d *Driver, id string) error { return d.Reboot(ctx, id) }},
		{"set controls and its rollback", nil, func(ctx context.Context, d *Driver, id string) error {
			return d.SetControls(ctx, id, model.Controls{DiskIOPS: 100})
		}},
		{"memory snapshot and its rollback", map[string]string{"query-status": running, "stop": "{}"},
			func(ctx context.Context, d *Driver, id string) error {
				d.vms[id].rec.Disks = nil // no layer files to make
				return d.Snapshot(ctx, id, "s1", true)
			}},
		{"stop", nil, func(ctx context.Context, d *Driver, id string) error { return d.Stop(ctx, id, time.Second) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, id := stuckVM(t, tt.answers)
			done := make(chan error, 1)
			go func() { done <- tt.op(context.Background(), d, id) }() // no deadline
			select {
			case err := <-done:
				t.Logf("returned: %v", err)
			case <-time.After(60 * time.Second):
				t.Fatal("the operation still waits on the stuck monitor")
			}
			v := d.vms[id]
			if !v.mu.TryLock() {
				t.Fatal("the VM's lock is still held")
			}
			v.mu.Unlock()
		})
	}
}

package devenv_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/cli"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/hypervisor/sim"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
	"github.com/vpool/vpool/internal/testenv"
)

// TestRunDev starts `vpool dev` in process (memstore instead of etcd)
// and checks what a newcomer relies on: the banner, the admin token file,
// a CLI config that reaches the server, and the hosts running VMs.
func TestRunDev(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "data", "config.json") // the default: beside the data
	guests := t.TempDir()
	touch(t, filepath.Join(guests, "abc", "vmlinux"), "kernel")
	touch(t, filepath.Join(guests, "abc", "initramfs.cpio.gz"), "initrd")
	touch(t, filepath.Join(guests, "abc", "cmdline"), "console=ttyS0 quiet\n")
	st := memstore.New()
	defer st.Close()
	ready := make(chan *devenv.Dev, 1)
	var out bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- devenv.RunDev(ctx, devenv.DevConfig{
			DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0",
			SimHosts: 2, LocalDriver: devenv.DriverSim, LocalName: "local", GuestCache: guests,
			Store: st, Out: &out, Ready: func(d *devenv.Dev) { ready <- d },
			StatusInterval: 200 * time.Millisecond,
		})
	}()
	var dev *devenv.Dev
	select {
	case dev = <-ready:
	case err := <-done:
		t.Fatalf("RunDev: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("RunDev did not get ready")
	}
	if len(dev.Hosts) != 3 || dev.Hosts[0].Name != "local" || dev.Hosts[1].Name != "sim-1" {
		t.Fatalf("hosts = %+v", dev.Hosts)
	}
	for _, want := range []string{
		"dev: server ready", "dev: registered the test guest as image busybox", "dev: 3 hosts ready: local (sim), sim-1 (sim), sim-2 (sim)",
		"API          " + dev.Server.URL(), "dashboard    " + dev.Server.URL() + "/ui/", filepath.Join(dir, "data", "admin.token"),
		"CLI config   " + cfgPath, "--image busybox",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dev's output lacks %q:\n%s", want, out.String())
		}
	}
	// The banner promises hosts: they are there the moment it is out.
	if hs, _, err := dev.Server.Repo().ListHosts(context.Background()); err != nil || len(hs) != 3 {
		t.Fatalf("hosts when the banner is out: %d (%v), want 3", len(hs), err)
	}
	if im, err := dev.Server.Repo().GetImage(context.Background(), devenv.TestGuestImage); err != nil || im.Cmdline != "console=ttyS0 quiet" || len(im.Files) != 2 {
		t.Fatalf("test guest image: %+v %v", im, err)
	}
	tok, err := os.ReadFile(filepath.Join(dir, "data", "admin.token"))
	if err != nil || strings.TrimSpace(string(tok)) != dev.Server.AdminToken() {
		t.Fatalf("admin.token: %q %v", tok, err)
	}
	cc, err := cli.ReadConfig(cfgPath)
	if err != nil || cc.Addr != dev.Server.URL() || cc.Token != dev.Server.AdminToken() {
		t.Fatalf("client config %+v %v", cc, err)
	}
	c, err := client.New(cc.Addr, cc.Token, client.WithPollInterval(20*time.Millisecond, 100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: "hello", Spec: model.VMSpec{VCPUs: 1, Memory: 256 * model.MiB}}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if _, err := c.WaitVM(wctx, api.DefaultProject, "hello", client.InPhase(model.PhaseRunning), nil); err != nil {
		t.Fatalf("hello never ran: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunDev: %v", err)
	}
}

// TestDevExit: Ctrl-C stops the local QEMU host's VMs (here a simulated
// driver stands in for QEMU) and says so; with KeepVMs they keep running
// and dev says how they end.
func TestDevExit(t *testing.T) {
	testenv.MustHaveTool(t, "qemu-system-x86_64", "apt-get install qemu-system-x86") // dev picks its QEMU factory only where QEMU is
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			host := sim.MustHost(sim.Config{Name: "local"})
			st := memstore.New()
			defer st.Close()
			ready := make(chan *devenv.Dev, 1)
			var out syncBuffer
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- devenv.RunDev(ctx, devenv.DevConfig{
					DataDir: t.TempDir(), Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", LocalName: "local", LocalDriver: devenv.DriverQEMU,
					QEMU:       func(devenv.QEMUOptions) (hypervisor.Driver, error) { return host.Driver(), nil },
					GuestCache: "-", ConfigPath: "-", KeepVMs: keep, Store: st, Out: &out,
					Ready: func(d *devenv.Dev) { ready <- d }, StatusInterval: 200 * time.Millisecond,
				})
			}()
			dev := <-ready
			c, _ := client.New(dev.Server.URL(), dev.Server.AdminToken(), client.WithPollInterval(20*time.Millisecond, 100*time.Millisecond))
			if _, err := c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: "g1", Spec: model.VMSpec{VCPUs: 1, Memory: 256 * model.MiB}}); err != nil {
				t.Fatal(err)
			}
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			defer wcancel()
			if _, err := c.WaitVM(wctx, api.DefaultProject, "g1", client.InPhase(model.PhaseRunning), nil); err != nil {
				t.Fatal(err)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			infos, _ := host.Driver().List(context.Background())
			if len(infos) != 1 || (infos[0].State == hypervisor.StateRunning) != keep {
				t.Fatalf("after exit (keep=%v) the VM is %+v", keep, infos)
			}
			want := "dev: stopping 1 VM(s) on local"
			if keep {
				want = "dev: 1 VM(s) keep running on local"
			}
			if !strings.Contains(out.String(), want) {
				t.Fatalf("exit output lacks %q:\n%s", want, out.String())
			}
		})
	}
}

// syncBuffer is a bytes.Buffer safe for the agents' goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

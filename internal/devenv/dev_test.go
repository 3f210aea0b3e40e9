package devenv_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/cli"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store/memstore"
)

// TestRunDev starts `vpool dev` in process (memstore instead of etcd)
// and checks what a newcomer relies on: the banner, the admin token file,
// a CLI config that reaches the server, and the hosts running VMs.
func TestRunDev(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "client.json")
	st := memstore.New()
	defer st.Close()
	ready := make(chan *devenv.Dev, 1)
	var out bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- devenv.RunDev(ctx, devenv.DevConfig{
			DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0",
			SimHosts: 2, LocalDriver: devenv.DriverSim, LocalName: "local", ConfigPath: cfgPath,
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
	if !strings.Contains(out.String(), dev.Server.URL()) {
		t.Fatalf("banner does not show the URL:\n%s", out.String())
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

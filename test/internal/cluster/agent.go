package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

// Agent is one `vpool agent` process (a host); it can be killed and
// started again on its state dir.
type Agent struct {
	proc
	Name, StateDir string
}

// AgentOptions are the flags of the agents StartAgents runs.
type AgentOptions struct {
	Driver       string            // sim (default) or qemu
	Pools        map[string]string // --pool NAME=DIR
	SimCPUs      int               // --sim-cpus (default 8)
	SimMemory    string            // --sim-memory (default 32GiB)
	MigrateDelay time.Duration     // --sim-migrate-delay
	Extra        []string
}

// StartAgents starts n agents h1..hn that know every server, joined with
// one join token, and waits until the cluster lists them all ready.
func (cl *Cluster) StartAgents(tb testing.TB, n int, o AgentOptions) []*Agent {
	tb.Helper()
	jt, err := cl.C.CreateJoinToken(context.Background(), api.JoinTokenRequest{Uses: n})
	if err != nil {
		tb.Fatal(err)
	}
	if o.Driver == "" {
		o.Driver = "sim"
	}
	var out []*Agent
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("h%d", i)
		a := &Agent{Name: name, StateDir: filepath.Join(cl.Root, "agent-"+name)}
		args := []string{"agent", "--server", cl.AgentURLs(), "--name", name, "--state-dir", a.StateDir,
			"--driver", o.Driver, "--address", "127.0.0.1", "--log-level", "info"}
		for k, v := range o.Pools {
			args = append(args, "--pool", k+"="+v)
		}
		if o.SimCPUs > 0 {
			args = append(args, "--sim-cpus", fmt.Sprint(o.SimCPUs))
		}
		if o.SimMemory != "" {
			args = append(args, "--sim-memory", o.SimMemory)
		}
		if o.MigrateDelay > 0 {
			args = append(args, "--sim-migrate-delay", o.MigrateDelay.String())
		}
		args = append(args, o.Extra...)
		a.proc = proc{tb: tb, path: Binary(tb), args: args, env: append(IsolatedEnv(tb), "VPOOL_JOIN_TOKEN="+jt.Token),
			log: filepath.Join(cl.Root, "agent-"+name+".log")}
		a.start()
		tb.Cleanup(func() {
			a.Stop()
			if tb.Failed() {
				a.DumpLog("agent " + a.Name)
			}
		})
		out = append(out, a)
	}
	Eventually(tb, fmt.Sprintf("%d hosts ready", n), 90*time.Second, func() bool {
		hs, err := cl.C.ListHosts(context.Background())
		ready := 0
		for _, h := range hs {
			if h.State == model.HostReady {
				ready++
			}
		}
		return err == nil && ready == n
	})
	return out
}

// Start runs the agent again (its identity is in its state dir).
func (a *Agent) Start() { a.start() }

// SimVM is one VM as a sim agent's driver keeps it (its state file).
type SimVM struct {
	Config   hypervisor.VMConfig `json:"config"`
	State    hypervisor.State    `json:"state"`
	Incoming bool                `json:"incoming"`
}

// SimStateFile is where a sim agent's driver persists its VMs.
func (a *Agent) SimStateFile() string { return filepath.Join(a.StateDir, "sim", "host.json") }

// SimVMs reads the VMs of a sim agent's host as its driver has them —
// the host's own view, not the store's. A missing file is no VM.
func (a *Agent) SimVMs() (map[string]SimVM, error) {
	b, err := os.ReadFile(a.SimStateFile())
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st struct {
		VMs map[string]SimVM `json:"vms"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("cluster: %s: %w", a.SimStateFile(), err)
	}
	return st.VMs, nil
}

package placement

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/controller"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
	"github.com/vpool/vpool/internal/store/etcdstore/etcdtest"
)

// envScheduler carries a child scheduler's schedulerSpec (JSON).
const envScheduler = "VPOOL_PLACEMENT_SCHEDULER"

// schedulerReady is what a child scheduler prints once connected.
const schedulerReady = "PLACEMENT-SCHEDULER-READY"

type schedulerSpec struct {
	Endpoints []string
	Identity  string
}

func TestMain(m *testing.M) {
	etcdtest.MaybeRunMember() // etcd member children stop here
	if spec := os.Getenv(envScheduler); spec != "" {
		os.Exit(runScheduler(spec))
	}
	os.Exit(m.Run())
}

// runScheduler is a child process: the scheduling controller (all the
// controllers, without leader election) against the etcd at the given
// endpoints, until stdin closes or a signal comes. It logs each placement
// and each lost compare-and-swap on stderr.
func runScheduler(raw string) int {
	var spec schedulerSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "placement: bad %s: %v\n", envScheduler, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	st, err := etcdstore.Connect(ctx, spec.Endpoints, nil)
	if err != nil {
		fmt.Fprintf(os.Stderr, "placement: %v\n", err)
		return 1
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m := controller.New(schedulerConfig(st, spec.Identity, log))
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // the parent holds stdin: it closes when the parent ends
		stop()
	}()
	fmt.Println(schedulerReady)
	if err := m.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "placement: %v\n", err)
		return 1
	}
	return 0
}

// schedulerConfig is the controller configuration of every racing
// scheduler, in a child process or in a goroutine: no election, the real
// scheduler, hosts kept ready without heartbeats.
func schedulerConfig(st store.Store, identity string, log *slog.Logger) controller.Config {
	return controller.Config{
		Store: st, Identity: identity, Logger: log, NoElection: true,
		Placer:         controller.NewSchedulerPlacer(),
		ResyncInterval: 200 * time.Millisecond,
		HostDownGrace:  time.Hour, // hosts are seeded without liveness keys
	}
}

// childScheduler is a scheduler running in a child process.
type childScheduler struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	stderr strings.Builder
	done   chan struct{}
}

// startScheduler re-executes the test binary as a scheduler and waits
// until it is connected.
func startScheduler(t *testing.T, endpoints []string, identity string) *childScheduler {
	t.Helper()
	spec, _ := json.Marshal(schedulerSpec{Endpoints: endpoints, Identity: identity})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envScheduler+"="+string(spec))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childScheduler{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	ready := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == schedulerReady {
				close(ready)
			}
		}
	})
	wg.Go(func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.mu.Lock()
			c.stderr.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
		}
	})
	go func() { wg.Wait(); _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(c.stop)
	select {
	case <-ready:
	case <-c.done:
		t.Fatalf("scheduler %s exited before it was ready:\n%s", identity, c.log())
	case <-time.After(time.Minute):
		t.Fatalf("scheduler %s not ready:\n%s", identity, c.log())
	}
	return c
}

// stop closes the child's stdin (it stops cleanly) and waits for it.
func (c *childScheduler) stop() {
	_ = c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func (c *childScheduler) log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stderr.String()
}

// placed counts the placements the child logged.
func (c *childScheduler) placed() int { return strings.Count(c.log(), `msg="placed VM"`) }

// lost counts the compare-and-swaps the child lost.
func (c *childScheduler) lost() int {
	return strings.Count(c.log(), `msg="placement lost its compare-and-swap`)
}

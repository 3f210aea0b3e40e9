package etcdtest

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// startTimeout bounds how long Start waits for a cluster to be ready.
const startTimeout = 90 * time.Second

// Cluster is a running etcd cluster of child processes. Everything it
// started ends when the test ends.
type Cluster struct {
	Members []*Member
	// With Options.TLS: the CA that signed the members, and a client
	// certificate they accept (files).
	CAFile, CertFile, KeyFile string
	// With Options.Password: the root user's name and password.
	User, Password string
}

// Options make a cluster like a production one.
type Options struct {
	// TLS serves https with client-certificate authentication.
	TLS bool
	// Password turns etcd's authentication on, with a user "root" of
	// this password.
	Password string
}

// ClientTLS is the client configuration of a TLS cluster (nil without).
func (c *Cluster) ClientTLS(t testing.TB) *tls.Config {
	t.Helper()
	if c.CAFile == "" {
		return nil
	}
	cfg, err := etcdstore.ClientTLS(c.CAFile, c.CertFile, c.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Member is one etcd member in a child process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	DataDir   string // the member's data (a test may restart it in process)
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	exited    chan struct{} // closed when the process has been waited for
	stderr    *syncBuffer
}

// Endpoints returns the client URLs of every member, for etcdstore.Connect.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.Members))
	for i, m := range c.Members {
		eps[i] = m.ClientURL
	}
	return eps
}

// Kill sends SIGKILL to the member and waits until it is gone.
func (m *Member) Kill() error {
	if err := m.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("etcdtest: kill %s: %w", m.Name, err)
	}
	<-m.exited
	return nil
}

// StartCluster starts an n-member cluster and returns its client
// endpoints. See the package doc for the TestMain hook.
func StartCluster(t testing.TB, n int) []string {
	t.Helper()
	return Start(t, n).Endpoints()
}

// Start starts an n-member cluster (1, 3 or 5 make sense), waits until
// every member is ready and registers its teardown with t.Cleanup. It
// fails the test if the cluster does not come up; a start that lost a
// race for a free port is retried with new ports.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	return StartWith(t, n, Options{})
}

// StartWith is Start with TLS or authentication.
func StartWith(t testing.TB, n int, o Options) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("etcdtest: cluster of %d members", n)
	}
	bin, args := memberCommand(t)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		c, err := start(t, bin, args, n, o.TLS)
		if err == nil && o.Password != "" {
			err = c.enableAuth(o.Password)
		}
		if err == nil {
			return c
		}
		lastErr = err
		t.Logf("etcdtest: cluster start attempt %d: %v", attempt+1, err)
	}
	t.Fatalf("etcdtest: start %d-member cluster: %v", n, lastErr)
	return nil
}

// memberCommand returns how to start a member process.
func memberCommand(t testing.TB) (string, []string) {
	if hooked.Load() {
		// The test binary itself; -test.run=^$ so that it could not run
		// tests even if MaybeRunMember were skipped.
		return os.Args[0], []string{"-test.run=^$"}
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "etcd-member")
	cmd := exec.Command(goTool, "build", "-o", bin, "github.com/vpool/vpool/internal/store/etcdstore/etcdtest/member")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("etcdtest: no MaybeRunMember in TestMain, and go build of the member binary failed: %v\n%s", err, out)
	}
	return bin, nil
}

func start(t testing.TB, bin string, args []string, n int, secure bool) (*Cluster, error) {
	root := t.TempDir()
	c := &Cluster{}
	scheme, tlsDir := "http", ""
	if secure {
		scheme, tlsDir = "https", filepath.Join(root, "tls")
	}
	var initial []string
	for i := 0; i < n; i++ {
		cp, err := etcdstore.FreePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		pp, err := etcdstore.FreePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("m%d", i)
		m := &Member{
			Name:      name,
			DataDir:   dataDir(root, name),
			ClientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, cp),
			PeerURL:   fmt.Sprintf("%s://127.0.0.1:%d", scheme, pp),
		}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
		if secure {
			// The parent makes every member's material in the shared
			// dir, so that the children find it current and write none.
			lt, err := pki.EnsureLocalTLS(tlsDir, m.Name, nil, time.Now())
			if err != nil {
				return nil, err
			}
			c.CAFile, c.CertFile, c.KeyFile = lt.CACert, lt.ClientCert, lt.ClientKey
		}
	}
	readies := make([]chan struct{}, n)
	for i, m := range c.Members {
		spec := memberSpec{Name: m.Name, DataDir: m.DataDir, ClientURL: m.ClientURL, PeerURL: m.PeerURL,
			InitialCluster: strings.Join(initial, ","), TLSDir: tlsDir}
		ready, err := m.launch(bin, args, spec)
		if err != nil {
			c.stop()
			return nil, err
		}
		readies[i] = ready
	}
	t.Cleanup(func() {
		c.stop()
		if t.Failed() {
			for _, m := range c.Members {
				t.Logf("etcdtest: member %s stderr (tail):\n%s", m.Name, lastLines(m.stderr.String(), 30))
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for i, m := range c.Members {
		select {
		case <-readies[i]:
		case <-m.exited:
			c.stop()
			return nil, fmt.Errorf("member %s exited before it was ready: %s", m.Name, lastLines(m.stderr.String(), 10))
		case <-ctx.Done():
			c.stop()
			return nil, fmt.Errorf("member %s not ready after %v: %s", m.Name, startTimeout, lastLines(m.stderr.String(), 10))
		}
	}
	return c, nil
}

// launch starts the member's process and returns a channel closed when
// the member says it is ready.
func (m *Member) launch(bin string, args []string, spec memberSpec) (chan struct{}, error) {
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	m.cmd = exec.Command(bin, args...)
	m.cmd.Env = append(os.Environ(), envMember+"="+string(js))
	m.stderr = &syncBuffer{}
	m.cmd.Stderr = m.stderr
	ready := make(chan struct{})
	m.cmd.Stdout = &readyWriter{ready: ready}
	if m.stdin, err = m.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start member %s: %w", m.Name, err)
	}
	m.exited = make(chan struct{})
	go func() {
		_ = m.cmd.Wait()
		close(m.exited)
	}()
	return ready, nil
}

// stop kills every member still running and waits for them.
func (c *Cluster) stop() {
	for _, m := range c.Members {
		if m.cmd == nil || m.cmd.Process == nil {
			continue
		}
		_ = m.stdin.Close()
		_ = m.Kill()
	}
}

// enableAuth adds the user root with password and turns etcd's
// authentication on.
func (c *Cluster) enableAuth(password string) error {
	var tlsCfg *tls.Config
	if c.CAFile != "" {
		var err error
		if tlsCfg, err = etcdstore.ClientTLS(c.CAFile, c.CertFile, c.KeyFile); err != nil {
			return err
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), TLS: tlsCfg, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.stop()
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = cli.UserAdd(ctx, "root", password)
	if err == nil {
		_, err = cli.UserGrantRole(ctx, "root", "root")
	}
	if err == nil {
		_, err = cli.AuthEnable(ctx)
	}
	if err != nil {
		c.stop()
		return fmt.Errorf("enable auth: %w", err)
	}
	c.User, c.Password = "root", password
	return nil
}

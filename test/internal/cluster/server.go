package cluster

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
)

// Server is one `vpool server` process with its embedded store member;
// it can be killed and started again on its data dir and ports.
type Server struct {
	proc
	Name, Dir            string
	API, AgentAddr, Peer string   // host:port
	Extra                []string // more flags (--join, --initial-cluster, ...)
	LogLevel             string   // default info
	Client               *client.Client
	StartedAt, HealthyAt time.Time
}

// NewServer prepares (does not start) a server named name under root,
// with fresh loopback ports.
func NewServer(tb testing.TB, root, name string) *Server {
	s := &Server{Name: name, Dir: filepath.Join(root, name), API: FreeAddr(tb), AgentAddr: FreeAddr(tb), Peer: FreeAddr(tb)}
	s.proc = proc{tb: tb, path: Binary(tb), env: IsolatedEnv(tb), log: filepath.Join(root, name+".log")}
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			s.DumpLog(s.Name)
		}
	})
	return s
}

// Start runs the server (again) with its flags.
func (s *Server) Start() {
	s.tb.Helper()
	level := s.LogLevel
	if level == "" {
		level = "info"
	}
	s.args = append([]string{"server", "--name", s.Name, "--data-dir", s.Dir, "--listen", s.API, "--agent-listen", s.AgentAddr,
		"--peer-url", "https://" + s.Peer, "--log-level", level}, s.Extra...)
	s.start()
	s.StartedAt = time.Now()
}

// WaitHealthy waits for /healthz (2.5 minutes at most).
func (s *Server) WaitHealthy() {
	s.tb.Helper()
	if err := s.waitHealthy(150 * time.Second); err != nil {
		s.DumpLog(s.Name)
		s.tb.Fatal(err)
	}
}

// waitHealthy is WaitHealthy returning the failure.
func (s *Server) waitHealthy(within time.Duration) error {
	deadline := time.Now().Add(within)
	done := s.Done()
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get("http://" + s.API + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				s.HealthyAt = time.Now()
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("cluster: server %s exited before it was healthy", s.Name)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: server %s not healthy after %s", s.Name, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Cluster is the servers of one control plane and an admin client that
// knows them all and fails over between them.
type Cluster struct {
	tb      testing.TB
	Root    string
	Servers []*Server
	Token   string
	C       *client.Client
	CAHash  string
}

// Start starts n servers: the first alone, then each other one after
// `vpool cluster member add` (the client's AddMember) with
// `vpool server --join`.
func Start(tb testing.TB, n int) *Cluster {
	tb.Helper()
	root := tb.TempDir()
	cl := &Cluster{tb: tb, Root: root}
	for i := 1; i <= n; i++ {
		cl.Servers = append(cl.Servers, NewServer(tb, root, fmt.Sprintf("s%d", i)))
	}
	first := cl.Servers[0]
	first.Start()
	first.WaitHealthy()
	tok, err := os.ReadFile(filepath.Join(first.Dir, "admin.token"))
	if err != nil {
		tb.Fatal(err)
	}
	cl.Token = strings.TrimSpace(string(tok))
	first.Client = cl.ClientOf(first)
	for _, s := range cl.Servers[1:] {
		res, err := first.Client.AddMember(context.Background(), api.MemberAddRequest{Name: s.Name})
		if err != nil {
			tb.Fatalf("member add %s: %v", s.Name, err)
		}
		file := filepath.Join(root, s.Name+".token")
		if err := os.WriteFile(file, []byte(res.Token+"\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
		s.Extra = append(s.Extra, "--join", "https://"+first.AgentAddr, "--join-token-file", file)
		s.Start()
		s.WaitHealthy()
		s.Client = cl.ClientOf(s)
	}
	var addrs []string
	for _, s := range cl.Servers {
		addrs = append(addrs, "http://"+s.API)
	}
	c, err := client.New(strings.Join(addrs, ","), cl.Token, client.WithPollInterval(50*time.Millisecond, 250*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	cl.C = c
	info, err := c.ClusterInfo(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	cl.CAHash = info.CAHash
	return cl
}

// ClientOf is an admin client of one server only.
func (cl *Cluster) ClientOf(s *Server) *client.Client {
	c, err := client.New("http://"+s.API, cl.Token, client.WithPollInterval(50*time.Millisecond, 250*time.Millisecond))
	if err != nil {
		cl.tb.Fatal(err)
	}
	return c
}

// AgentURLs is every server's agent listener, comma-separated (the
// agents' --server).
func (cl *Cluster) AgentURLs() string {
	var urls []string
	for _, s := range cl.Servers {
		urls = append(urls, "https://"+s.AgentAddr)
	}
	return strings.Join(urls, ",")
}

// Leader is the server running the controllers, as the cluster says.
func (cl *Cluster) Leader(ctx context.Context) (*Server, error) {
	info, err := cl.C.ClusterInfo(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range cl.Servers {
		if s.Name == info.Leader {
			return s, nil
		}
	}
	return nil, fmt.Errorf("cluster: no leader (%q)", info.Leader)
}

// Restart starts a killed server again and waits until it is healthy;
// it returns the failure instead of ending the test, so that a chaos
// loop can report it.
func (s *Server) Restart(within time.Duration) error {
	s.Start()
	return s.waitHealthy(within)
}

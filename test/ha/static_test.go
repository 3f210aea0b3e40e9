package ha

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/client"
	harness "github.com/vpool/vpool/test/internal/cluster"
)

// TestStaticInitialCluster starts three servers together from one
// --initial-cluster list: a member other than the first refuses to start
// without copies of the shared secrets (and names them), the first makes
// them before it waits for its peers, and with copies all three form one
// control plane whose every server serves the same state.
func TestStaticInitialCluster(t *testing.T) {
	root := t.TempDir()
	var servers []*srv
	var list []string
	for i := 1; i <= 3; i++ {
		s := harness.NewServer(t, root, fmt.Sprintf("s%d", i))
		servers = append(servers, s)
		list = append(list, s.Name+"=https://"+s.Peer)
	}
	for _, s := range servers {
		s.Extra = []string{"--initial-cluster", strings.Join(list, ",")}
	}
	s1, s2, s3 := servers[0], servers[1], servers[2]

	s2.Start()
	select {
	case <-s2.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("a member without the shared secrets did not refuse to start")
	}
	if b, _ := os.ReadFile(s2.LogPath()); !strings.Contains(string(b), "copy those files") || !strings.Contains(string(b), "ca-seal.key") {
		t.Fatalf("the refusal does not say what to copy:\n%s", b)
	}

	s1.Start()
	copySecrets(t, s1, s2, s3)
	for _, s := range servers {
		s.WaitHealthy()
	}
	checkOnePlane(t, s1, s2, s3)
}

// checkOnePlane writes through s2 with s1's admin token, reads through
// s3, and wants three started voters, one raft leader and one server
// running the controllers.
func checkOnePlane(t *testing.T, s1, s2, s3 *srv) {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(s1.Dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	c := func(s *srv) *client.Client {
		c, err := client.New("http://"+s.API, strings.TrimSpace(string(tok)))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	if _, err := c(s2).CreateProject(ctx, api.ProjectCreateRequest{Name: "written-on-s2"}); err != nil {
		t.Fatalf("write through s2 with s1's admin token: %v", err)
	}
	if _, err := c(s3).GetProject(ctx, "written-on-s2"); err != nil {
		t.Fatalf("read through s3: %v", err)
	}
	ml, err := c(s3).Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	raft, ctl := 0, 0
	for _, m := range ml.Items {
		if m.Learner || m.Name == "" {
			t.Errorf("member %+v: want a started voter", m)
		}
		if m.RaftLeader {
			raft++
		}
		if m.Leader {
			ctl++
		}
	}
	if len(ml.Items) != 3 || raft != 1 || ctl != 1 {
		t.Fatalf("members %+v: want 3, one raft leader, one running the controllers", ml.Items)
	}
}

// copySecrets waits for the first member's shared secrets, copies them
// to the others (as an operator would, 0600) and starts them.
func copySecrets(t *testing.T, s1 *srv, others ...*srv) {
	t.Helper()
	shared := []string{filepath.Join("etcd", "tls", "ca.crt"), filepath.Join("etcd", "tls", "ca.key"), "ca-seal.key"}
	eventually(t, "the first member's secrets", 30*time.Second, func() bool {
		for _, f := range shared {
			if _, err := os.Stat(filepath.Join(s1.Dir, f)); err != nil {
				return false
			}
		}
		return true
	})
	for _, s := range others {
		for _, f := range shared {
			b, err := os.ReadFile(filepath.Join(s1.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Dir(filepath.Join(s.Dir, f)), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(s.Dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		s.Start()
	}
}

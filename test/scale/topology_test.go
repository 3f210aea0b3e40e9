package scale

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/store/etcdstore"
)

// topology is how a stack's servers keep their state: one server with
// its embedded etcd member; several servers each with an embedded
// member of one cluster (`--initial-cluster`, what docs/ha.md tells
// users to run); or several servers on one external etcd member
// (`--etcd-endpoints`, the harness's only multi-server topology before
// the seventh round).
type topology struct {
	servers  int
	external bool // the servers share one external etcd member
}

// name is the sub-benchmark's name: servers=1, servers=3 (embedded
// members) or servers=3-external-etcd.
func (t topology) name() string {
	if t.external {
		return fmt.Sprintf("servers=%d-external-etcd", t.servers)
	}
	return fmt.Sprintf("servers=%d", t.servers)
}

// envExternal, set, makes the three-server topology three servers on
// one external etcd member instead of three embedded members.
const envExternal = "VPOOL_SCALE_EXTERNAL_ETCD"

// topologies are the topologies measured: VPOOL_SCALE_SERVERS=1 or 3
// picks one, the default runs both; three servers have an embedded
// member each, or with VPOOL_SCALE_EXTERNAL_ETCD=1 share an external one.
func topologies() []topology {
	three := topology{servers: 3, external: os.Getenv(envExternal) != ""}
	switch envInt("VPOOL_SCALE_SERVERS", 0) {
	case 1:
		return []topology{{servers: 1}}
	case 3:
		return []topology{three}
	}
	return []topology{{servers: 1}, three}
}

// sharedSecrets are the files every member of a static cluster needs a
// copy of before its first start (docs/ha.md, "Static"), relative to a
// server's data dir.
var sharedSecrets = []string{filepath.Join("etcd", "tls", "ca.crt"), filepath.Join("etcd", "tls", "ca.key"), "ca-seal.key"}

// startMembers starts n servers together from one --initial-cluster
// list, as an operator does: the first named makes the shared secrets
// while it waits for its peers, they are copied (0600) to the others,
// which start then; it returns once every server answers /healthz.
func (st *stack) startMembers(n int, shared string) {
	tb := st.tb
	var list []string
	for i := range n {
		s := st.newServer(i)
		s.peer = freeAddr(tb)
		st.servers = append(st.servers, s)
		list = append(list, s.name+"=https://"+s.peer)
	}
	cluster := []string{"--initial-cluster", strings.Join(list, ",")}
	first := st.servers[0]
	st.launch(first, shared, cluster)
	deadline := time.Now().Add(time.Minute)
	for !haveFiles(first.dataDir, sharedSecrets) {
		select {
		case <-first.done:
			first.dumpLog(tb)
			tb.Fatalf("server %s exited before it made the shared secrets", first.name)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			first.dumpLog(tb)
			tb.Fatalf("server %s made no shared secrets in a minute", first.name)
		}
	}
	for _, s := range st.servers[1:] {
		for _, f := range sharedSecrets {
			b, err := os.ReadFile(filepath.Join(first.dataDir, f))
			if err != nil {
				tb.Fatal(err)
			}
			path := filepath.Join(s.dataDir, f)
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				tb.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o600); err != nil {
				tb.Fatal(err)
			}
		}
		st.launch(s, shared, cluster)
	}
	for _, s := range st.servers {
		st.waitHealthy(s)
	}
}

func haveFiles(dir string, files []string) bool {
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return false
		}
	}
	return true
}

// connectStore connects to the store behind the live servers: the
// external member, or the embedded members of the servers still
// running (their client URLs read from a live member's peer port,
// where etcd lists its members; mutual TLS with the client certificate
// every member's server holds).
func (st *stack) connectStore(ctx context.Context) (*etcdstore.Store, error) {
	if st.etcdURL != "" {
		return etcdstore.Connect(ctx, []string{st.etcdURL}, nil)
	}
	live := st.live()
	if len(live) == 0 {
		return nil, fmt.Errorf("scale: no server running")
	}
	dir := filepath.Join(live[0].dataDir, "etcd", "tls")
	tlsCfg, err := etcdstore.ClientTLS(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"))
	if err != nil {
		return nil, err
	}
	urls, err := memberClientURLs(ctx, live, tlsCfg)
	if err != nil {
		return nil, err
	}
	return etcdstore.Connect(ctx, urls, tlsCfg)
}

// memberClientURLs asks the first live server's member (GET /members on
// its peer port, etcd's own list) for the client URLs of the members
// whose servers still run.
func memberClientURLs(ctx context.Context, live []*serverProc, tlsCfg *tls.Config) ([]string, error) {
	running := map[string]bool{}
	for _, s := range live {
		running[s.name] = true
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	var lastErr error
	for _, s := range live {
		if s.peer == "" {
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+s.peer+"/members", nil)
		resp, err := hc.Do(req)
		if err != nil {
			lastErr = err
			continue
		}
		var ms []struct {
			Name       string   `json:"name"`
			ClientURLs []string `json:"clientURLs"`
		}
		err = json.NewDecoder(resp.Body).Decode(&ms)
		resp.Body.Close()
		if err != nil {
			lastErr = fmt.Errorf("scale: members from %s: %w", s.peer, err)
			continue
		}
		var urls []string
		for _, m := range ms {
			if running[m.Name] {
				urls = append(urls, m.ClientURLs...)
			}
		}
		if len(urls) == 0 {
			return nil, fmt.Errorf("scale: no client URL of a running member in %+v", ms)
		}
		return urls, nil
	}
	return nil, fmt.Errorf("scale: no member list from a live server's peer port: %v", lastErr)
}

// checkTopology fails a test whose servers do not form what t says: as
// many store members as servers (embedded), or one store (external).
func (st *stack) checkTopology(tb testing.TB, t topology) {
	tb.Helper()
	ml, err := st.servers[0].c.Members(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	want := "embedded"
	if t.external {
		want = "external"
	}
	if ml.Store != want || (!t.external && len(ml.Items) != t.servers) {
		tb.Fatalf("store %s with %d members, want %s with %d", ml.Store, len(ml.Items), want, t.servers)
	}
}

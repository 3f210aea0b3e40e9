package devenv_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
	"github.com/vpool/vpool/internal/store/memstore"
)

// The operator re-keys a host: its agent, started with the re-key token,
// replaces its identity and the host is back with its VM; the old
// certificate stays refused.
func TestRekeyedHostJoinsAgain(t *testing.T) {
	st := memstore.New()
	t.Cleanup(func() { st.Close() })
	cl := startCluster(t, devenv.ServerConfig{Store: st}, 1)
	ctx := context.Background()
	if _, err := cl.c.CreateVM(ctx, api.DefaultProject, api.VMCreateRequest{Name: "v", Spec: model.VMSpec{
		VCPUs: 1, Memory: 256 * model.MiB, Disks: []model.Disk{{Name: "root", Size: model.GiB}}}}); err != nil {
		t.Fatal(err)
	}
	cl.waitPhase("v", model.PhaseRunning)
	certFile, keyFile := filepath.Join(cl.dir, "h1", "agent.crt"), filepath.Join(cl.dir, "h1", "agent.key")
	oldCert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cl.stopAgent("h1")
	rk, err := cl.c.RekeyHost(ctx, "h1", api.HostRekeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cl.token = rk.Token
	cl.startAgent("h1")
	cl.eventually("h1 ready with a new certificate", func() bool {
		h, err := cl.c.GetHost(ctx, "h1")
		cur, cerr := tls.LoadX509KeyPair(certFile, keyFile)
		return err == nil && cerr == nil && h.State == model.HostReady && !bytes.Equal(cur.Certificate[0], oldCert.Certificate[0])
	})
	if vm := cl.waitPhase("v", model.PhaseRunning); vm.Status.Host != "h1" {
		t.Fatalf("the VM moved to %q", vm.Status.Host)
	}
	// the old certificate is refused, at the handshake or with 403
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cl.srv.CAPEM())
	old := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{oldCert}, RootCAs: pool, ServerName: "127.0.0.1"}}}
	resp, err := old.Get(cl.srv.AgentURL() + "/agent/v1/assignments")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("the re-keyed certificate: %d", resp.StatusCode)
		}
	}
}

// A node's embedded etcd takes no client without its certificate: a
// local user cannot read the sealed CA nor write a token, and the API
// accepts no forged admin token.
func TestEmbeddedStoreRefusesLocalUsers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	ctx := context.Background()
	dir := t.TempDir()
	srv, err := devenv.StartServer(ctx, devenv.ServerConfig{DataDir: dir, Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", EtcdUnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	es, ok := srv.Store.(*etcdstore.Store)
	if !ok || es.LocalTLS() == nil {
		t.Fatalf("store %T without local TLS", srv.Store)
	}
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	if s, err := etcdstore.Connect(short, es.Endpoints(), nil); err == nil {
		s.Close()
		t.Fatal("a client without credentials connected to the embedded etcd")
	}
	trustOnly, err := etcdstore.ClientTLS(es.LocalTLS().CACert, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if s, err := etcdstore.Connect(short, es.Endpoints(), trustOnly); err == nil {
		s.Close()
		t.Fatal("a client without a certificate connected to the embedded etcd")
	}
	// the server's own view: the CA record holds no plaintext key
	kv, err := srv.Store.Get(ctx, store.CAKey)
	if err != nil || bytes.Contains(kv.Value, []byte("PRIVATE KEY")) {
		t.Fatalf("CA record: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ca-seal.key")); err != nil {
		t.Fatalf("seal key file: %v", err)
	}
	if _, err := srv.Store.Get(ctx, store.TokenKey("forged")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("forged token: %v", err)
	}
}

package etcdstore_test

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// rawClient is a plain etcd client, as another process on the host would
// open one: it never goes through the Store.
func rawClient(t *testing.T, endpoints []string, tlsCfg *tls.Config, user, pass string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, TLS: tlsCfg, Username: user, Password: pass,
		DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// An embedded member serves only clients holding a certificate of its
// private CA: a local user who reaches the loopback port, with no
// certificate or with one of another CA (a host's, from the cluster CA),
// can neither read the CA record nor write a token.
func TestEmbeddedRefusesClientsWithoutCertificate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startFast(t)
	if _, _, err := s.Txn(ctx, nil, []store.Op{store.Put(store.CAKey, []byte("ca"))}); err != nil {
		t.Fatalf("the store's own client: %v", err)
	}
	lt := s.LocalTLS()
	if lt == nil {
		t.Fatal("an embedded member without TLS material")
	}
	for _, f := range []string{lt.CAKey, lt.ClientKey, lt.MemberKey} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi, err)
		}
	}
	if fi, err := os.Stat(lt.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("%s: %v %v", lt.Dir, fi, err)
	}
	// the material of another CA
	other, err := pki.EnsureLocalTLS(filepath.Join(t.TempDir(), "other"), "x", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	trustOnly, err := etcdstore.ClientTLS(lt.CACert, "", "")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := etcdstore.ClientTLS(lt.CACert, other.ClientCert, other.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	plainURL := []string{"http://" + s.Endpoints()[0][len("https://"):]}
	tests := []struct {
		name      string
		endpoints []string
		tls       *tls.Config
	}{
		{"plain http", plainURL, nil},
		{"TLS without a client certificate", s.Endpoints(), trustOnly},
		{"a client certificate of another CA", s.Endpoints(), foreign},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cli := rawClient(t, tt.endpoints, tt.tls, "", "")
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if resp, err := cli.Get(cctx, store.CAKey); err == nil {
				t.Fatalf("read the CA record: %q", resp.Kvs)
			}
			if _, err := cli.Put(cctx, store.TokenKey("forged"), `{"role":"admin"}`); err == nil {
				t.Fatal("wrote a token record")
			}
		})
	}
	if _, err := s.Get(ctx, store.TokenKey("forged")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("forged token: %v", err)
	}
	// the same files the server holds do open it
	own, err := etcdstore.ClientTLS(lt.CACert, lt.ClientCert, lt.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	o, err := etcdstore.Connect(ctx, s.Endpoints(), own)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if _, err := o.Get(ctx, store.CAKey); err != nil {
		t.Fatalf("with the server's client certificate: %v", err)
	}
}

// ConnectWith authenticates with etcd's users: wrong or missing
// credentials are refused once auth is on.
func TestConnectWithAuth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startFast(t)
	lt := s.LocalTLS()
	own, err := etcdstore.ClientTLS(lt.CACert, lt.ClientCert, lt.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	admin := rawClient(t, s.Endpoints(), own, "", "")
	if _, err := admin.UserAdd(ctx, "root", "r00t-pw"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		t.Cleanup(cancel)
		return c
	}
	if _, err := etcdstore.ConnectWith(short(), etcdstore.ClientConfig{Endpoints: s.Endpoints(), TLS: own, Username: "root", Password: "wrong"}); !errors.Is(err, rpctypes.ErrAuthFailed) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := etcdstore.ConnectWith(short(), etcdstore.ClientConfig{Endpoints: s.Endpoints(), TLS: own, Username: "root"}); err == nil {
		t.Fatal("a user without a password was accepted")
	}
	good, err := etcdstore.ConnectWith(short(), etcdstore.ClientConfig{Endpoints: s.Endpoints(), TLS: own, Username: "root", Password: "r00t-pw"})
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	defer good.Close()
	if _, _, err := good.Txn(ctx, nil, []store.Op{store.Put("/vpool/k", []byte("v"))}); err != nil {
		t.Fatal(err)
	}
}

func TestClientTLSErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, ca, cert, key string }{
		{"missing CA", filepath.Join(dir, "none"), "", ""},
		{"CA without a certificate", junk, "", ""},
		{"certificate without key", "", junk, ""},
		{"bad pair", "", junk, junk},
	}
	for _, tt := range tests {
		if _, err := etcdstore.ClientTLS(tt.ca, tt.cert, tt.key); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

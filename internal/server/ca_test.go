package server

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/memstore"
)

// The store holds the CA certificate and a sealed key: whoever reads the
// store (a local user on the server host, an external etcd's operator)
// cannot sign a host certificate with it.
func TestCAKeySealedInStore(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	dir := t.TempDir()
	ts := startServer(t, st, func(c *Config) { c.DataDir, c.CAKeyFile = dir, "" })
	kv, err := st.Get(context.Background(), store.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.ParseCA(kv.Value); err == nil || bytes.Contains(kv.Value, []byte("PRIVATE KEY")) {
		t.Fatal("the store holds the CA key in plaintext")
	}
	keyFile := filepath.Join(dir, DefaultCAKeyFile)
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seal key file: %v %v", fi, err)
	}
	// a second server without the key file cannot open the CA, and says
	// which file to copy
	_, err = New(Config{Store: st, Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), DefaultCAKeyFile) {
		t.Fatalf("a server without the seal key: %v", err)
	}
	// with the file it joins the same cluster
	b := startServer(t, st, func(c *Config) { c.CAKeyFile = keyFile })
	if b.CAHash() != ts.CAHash() {
		t.Fatal("the second server made another CA")
	}
	// a wrong key is refused, never replaced by a new CA
	wrong := filepath.Join(t.TempDir(), "wrong.key")
	k, _ := pki.NewSealKey()
	if err := pki.WriteSealKey(wrong, k); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Store: st, Listen: "127.0.0.1:0", AgentListen: "127.0.0.1:0", CAKeyFile: wrong}); err == nil {
		t.Fatal("a server opened the CA with another key")
	}
	again, _ := st.Get(context.Background(), store.CAKey)
	if !bytes.Equal(again.Value, kv.Value) {
		t.Fatal("the stored CA changed")
	}
}

// A CA stored in plaintext by an older server is sealed in place at the
// next start, keeping the CA.
func TestPlaintextCAIsSealed(t *testing.T) {
	st := memstore.New()
	defer st.Close()
	ca, _ := pki.NewCA(time.Now())
	der, _ := x509.MarshalECPrivateKey(ca.Key)
	plain := append(append([]byte(nil), ca.CertPEM...), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})...)
	if _, _, err := st.Txn(context.Background(), nil, []store.Op{store.Put(store.CAKey, plain)}); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, st)
	if ts.CAHash() != ca.Hash() {
		t.Fatal("the server replaced the existing CA")
	}
	kv, _ := st.Get(context.Background(), store.CAKey)
	key, err := pki.ReadSealKey(sealKeyFor(t, st))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(kv.Value, der) {
		t.Fatal("the CA key is still in the store in plaintext")
	}
	if opened, err := pki.OpenCA(kv.Value, key); err != nil || !opened.Key.Equal(ca.Key) {
		t.Fatalf("sealed CA: %v", err)
	}
}

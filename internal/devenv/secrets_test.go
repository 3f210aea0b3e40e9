package devenv_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/auditlog"
	"github.com/vpool/vpool/internal/client"
	"github.com/vpool/vpool/internal/devenv"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/server"
	"github.com/vpool/vpool/internal/store"
)

// logSink keeps every log line of a run.
type logSink struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestSecretsNeverReachLogsOrAudit runs a whole cluster — embedded etcd,
// server, controllers, two sim agents joined with a join token — at
// debug level, uses every kind of secret the platform makes (the admin
// token, project tokens, scoped tokens, a refused made-up token, join and
// re-key tokens, a tenant's cloud-init password) and then greps every log
// line, every audit record (in the store and in the export files), every
// event and every value of the store for each of them and for every key
// the run created (the CA seal key, the CA's and the audit signing key's
// private keys, the hosts' private keys, the etcd client key).
func TestSecretsNeverReachLogsOrAudit(t *testing.T) {
	if testing.Short() {
		t.Skip("embedded etcd in -short mode")
	}
	sink := &logSink{}
	logger := slog.New(slog.NewJSONHandler(sink, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dataDir := t.TempDir()
	cl := startCluster(t, devenv.ServerConfig{DataDir: dataDir, EtcdUnsafeNoFsync: true, Logger: logger}, 2)
	ctx := context.Background()
	secrets := map[string]string{"admin token": cl.srv.AdminToken(), "join token": cl.token}
	_, joinSecret, _ := strings.Cut(strings.TrimPrefix(cl.token, "vpool1."), ".")
	secrets["join token secret"] = joinSecret

	if _, err := cl.c.CreateProject(ctx, api.ProjectCreateRequest{Name: "alpha"}); err != nil {
		t.Fatal(err)
	}
	for _, tr := range []api.TokenCreateRequest{
		{Project: "alpha", Role: model.RoleMember},
		{Project: "alpha", Role: model.RoleViewer},
		{Project: "alpha", Role: model.RoleMember, Scopes: []string{model.ScopeVMsPower, "group:web"}},
		{Role: model.RoleAdmin, Scopes: []string{model.ScopeRead}},
		{Role: model.RoleMetrics},
	} {
		res, err := cl.c.CreateToken(ctx, tr)
		if err != nil {
			t.Fatal(err)
		}
		secrets["token "+string(tr.Role)+" "+strings.Join(tr.Scopes, ",")] = res.Secret
		useToken(t, cl, res.Secret)
	}
	secrets["made-up token"] = "vpt_0123456789abcdef0123456789abcdef0123456789abcdef"
	useToken(t, cl, secrets["made-up token"])
	jt, err := cl.c.CreateJoinToken(ctx, api.JoinTokenRequest{Uses: 2})
	if err != nil {
		t.Fatal(err)
	}
	secrets["API join token"] = jt.Token
	rk, err := cl.c.RekeyHost(ctx, "h2", api.HostRekeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	secrets["re-key token"] = rk.Token
	const password = "hunter2-cloud-init-password"
	secrets["cloud-init password"] = password
	vm := api.VMCreateRequest{Name: "web1", Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB,
		CloudInit: &model.CloudInit{UserData: "#cloud-config\npassword: " + password + "\n"}}}
	if _, err := cl.c.CreateVM(ctx, "alpha", vm); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.c.StopVM(ctx, "alpha", "web1"); err != nil {
		t.Fatal(err)
	}
	for name, v := range fileKeys(t, cl, dataDir) {
		secrets[name] = v
	}
	if err := cl.srv.Audit().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cl.srv.AuditTask(ctx, cl.srv.Store); err != nil { // export files too
		t.Fatal(err)
	}
	places := map[string]string{"the log": sink.String()}
	for _, prefix := range []string{store.AuditPrefix, store.EventsPrefix} {
		kvs, _, err := cl.srv.Store.List(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, kv := range kvs {
			b.Write(kv.Value)
			b.WriteByte('\n')
		}
		places[prefix] = b.String()
	}
	// the whole store, as an etcd snapshot or backup would hold it: every
	// secret is a hash or sealed there (docs/security.md VP-02, VP-23)
	all, _, err := cl.srv.Store.List(ctx, store.Root)
	if err != nil || len(all) < 20 {
		t.Fatalf("the store's %d keys: %v", len(all), err)
	}
	var dump strings.Builder
	for _, kv := range all {
		dump.WriteString(kv.Key + " " + string(kv.Value) + "\n")
	}
	places["the whole store"] = dump.String()
	files, err := auditlog.ExportFiles(filepath.Join(dataDir, "audit"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no export files: %v", err)
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		places[f] = string(b)
	}
	if n := strings.Count(places[store.AuditPrefix], `"kind":"api"`); n < 10 {
		t.Fatalf("only %d api records: the run did not exercise the audit trail", n)
	}
	if n := strings.Count(places["the log"], "\n"); n < 50 {
		t.Fatalf("only %d log lines: the run logged too little to be a test", n)
	}
	for what, secret := range secrets {
		if len(secret) < 16 {
			t.Fatalf("%s is too short to grep for: %q", what, secret)
		}
		for where, text := range places {
			if i := strings.Index(text, secret); i >= 0 {
				t.Errorf("%s found in %s: …%s…", what, where, text[max(0, i-80):min(len(text), i+len(secret)+20)])
			}
		}
	}
	t.Logf("%d secrets checked against %d log lines, %d audit records, %d export files", len(secrets),
		strings.Count(places["the log"], "\n"), strings.Count(places[store.AuditPrefix], "\n"), len(files))
}

// useToken writes and reads with a token, and fails a write, so that
// every path through authentication and the audit log sees it.
func useToken(t *testing.T, cl *cluster, secret string) {
	t.Helper()
	c, err := client.New(cl.srv.URL(), secret)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, _ = c.ListVMs(ctx, client.ListVMsOptions{Project: "alpha"})
	_, _ = c.CreateVM(ctx, "alpha", api.VMCreateRequest{Name: "t-" + secret[len(secret)-6:], Spec: model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB}})
	_, _ = c.CreateVM(ctx, "alpha", api.VMCreateRequest{Name: "bad name", Spec: model.VMSpec{VCPUs: 1}})
	_, _ = c.StopVM(ctx, "alpha", "web1")
}

// fileKeys reads every key the run wrote to disk and the private keys
// it sealed in the store, in the forms a leak would take.
func fileKeys(t *testing.T, cl *cluster, dataDir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	seal, err := pki.ReadSealKey(filepath.Join(dataDir, server.DefaultCAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	out["CA seal key"] = hex.EncodeToString(seal)
	ctx := context.Background()
	kv, err := cl.srv.Store.Get(ctx, store.CAKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.OpenCA(kv.Value, seal)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalECPrivateKey(ca.Key)
	addKey(out, "CA private key", der)
	kv, err = cl.srv.Store.Get(ctx, store.AuditKeyKey)
	if err != nil {
		t.Fatal(err)
	}
	var ak model.AuditKey
	if err := json.Unmarshal(kv.Value, &ak); err != nil {
		t.Fatal(err)
	}
	sealed, _ := base64.StdEncoding.DecodeString(ak.Sealed)
	seed, err := pki.OpenBytes(seal, sealed, []byte("vpool audit signing key\x00"+ak.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	addKey(out, "audit signing key", seed)
	keyFiles, _ := filepath.Glob(filepath.Join(cl.dir, "*", "agent.key"))
	etcdKeys, _ := filepath.Glob(filepath.Join(dataDir, "etcd", "tls", "*.key"))
	if len(keyFiles) < 2 || len(etcdKeys) == 0 {
		t.Fatalf("keys on disk: hosts %v, etcd %v", keyFiles, etcdKeys)
	}
	for _, p := range append(keyFiles, etcdKeys...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s holds no PEM", p)
		}
		addKey(out, p, blk.Bytes)
	}
	return out
}

// addKey adds a key's raw bytes as hex and base64, and, for an EC key,
// its private scalar.
func addKey(out map[string]string, name string, raw []byte) {
	out[name+" (hex)"] = hex.EncodeToString(raw)
	out[name+" (base64)"] = base64.StdEncoding.EncodeToString(raw)[:40]
	if k, err := x509.ParseECPrivateKey(raw); err == nil {
		out[name+" (scalar)"] = hex.EncodeToString(k.D.Bytes())
	} else if k, err := x509.ParsePKCS8PrivateKey(raw); err == nil {
		if ek, ok := k.(*ecdsa.PrivateKey); ok {
			out[name+" (scalar)"] = hex.EncodeToString(ek.D.Bytes())
		}
	}
}

package cli

import (
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/vpool/vpool/internal/client"
)

func TestResolvePrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "vpool", "config.json")
	if err := WriteConfig(file, Config{Addr: "http://file:1", Token: "file-tok", Project: "file-proj"}); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other.json")
	if err := WriteConfig(other, Config{Addr: "http://other:1", Token: "other-tok"}); err != nil {
		t.Fatal(err)
	}
	envAll := map[string]string{EnvAddr: "http://env:1", EnvToken: "env-tok", EnvProject: "env-proj"}
	tests := []struct {
		name    string
		flags   app
		env     map[string]string
		cfgDir  string
		want    Config
		wantErr error
	}{
		{"flags win", app{addr: "http://flag:1", token: "flag-tok", project: "flag-proj"}, envAll, dir,
			Config{Addr: "http://flag:1", Token: "flag-tok", Project: "flag-proj"}, nil},
		{"env over file", app{}, envAll, dir, Config{Addr: "http://env:1", Token: "env-tok", Project: "env-proj"}, nil},
		{"file", app{}, nil, dir, Config{Addr: "http://file:1", Token: "file-tok", Project: "file-proj"}, nil},
		{"mixed", app{addr: "http://flag:1"}, map[string]string{EnvToken: "env-tok"}, dir,
			Config{Addr: "http://flag:1", Token: "env-tok", Project: "file-proj"}, nil},
		{"default", app{}, nil, t.TempDir(), Config{Addr: client.DefaultAddr}, nil},
		{"--config", app{configFlag: other}, nil, dir, Config{Addr: "http://other:1", Token: "other-tok"}, nil},
		{"VPOOL_CONFIG", app{}, map[string]string{EnvConfig: other}, dir, Config{Addr: "http://other:1", Token: "other-tok"}, nil},
		{"--config missing", app{configFlag: filepath.Join(dir, "nope.json")}, nil, dir, Config{}, fs.ErrNotExist},
		{"VPOOL_CONFIG missing", app{}, map[string]string{EnvConfig: filepath.Join(dir, "nope.json")}, dir, Config{}, fs.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.flags
			a.env = env{
				lookup:    func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok },
				configDir: func() (string, error) { return tc.cfgDir, nil },
			}
			got, err := a.resolve()
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err == nil {
				if diff := cmp.Diff(tc.want, got.Config); diff != "" {
					t.Errorf("config (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestPrecedenceEndToEnd checks that the request reaches the server the
// precedence picks, with its token and project.
func TestPrecedenceEndToEnd(t *testing.T) {
	flagSrv, envSrv, fileSrv := newFake(t), newFake(t), newFake(t)
	for _, f := range []*fakeServer{flagSrv, envSrv, fileSrv} {
		f.anyToken = true
	}
	dir := t.TempDir()
	if err := WriteConfig(filepath.Join(dir, "vpool", "config.json"), Config{Addr: fileSrv.srv.URL, Token: "file-tok", Project: "p-file"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{EnvAddr: envSrv.srv.URL, EnvToken: "env-tok"}
	res := invocation{env: env, configDir: dir}.run(t, "vm", "list")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	res = invocation{env: env, configDir: dir}.run(t, "--addr", flagSrv.srv.URL, "--project", "p-flag", "vm", "list")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	res = invocation{configDir: dir}.run(t, "vm", "list")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	want := map[*fakeServer]call{
		envSrv:  {Pattern: "GET /api/v1/vms", Query: "limit=500&project=p-file", Token: "env-tok"},
		flagSrv: {Pattern: "GET /api/v1/vms", Query: "limit=500&project=p-flag", Token: "env-tok"},
		fileSrv: {Pattern: "GET /api/v1/vms", Query: "limit=500&project=p-file", Token: "file-tok"},
	}
	for f, w := range want {
		if diff := cmp.Diff([]call{w}, f.seen()); diff != "" {
			t.Errorf("server %s (-want +got):\n%s", f.srv.URL, diff)
		}
	}
}

func TestWriteConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "deep", "dir", "config.json")
	cfg := Config{Addr: "https://h:8440", Servers: []string{"https://h2:8440"}, Token: "t", Project: "p", CACert: "ca.pem"}
	if err := WriteConfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600 (it holds a token)", st.Mode().Perm())
	}
	got, err := ReadConfig(path)
	if err != nil || !cmp.Equal(got, cfg) {
		t.Errorf("ReadConfig = %+v, %v; want %+v", got, err, cfg)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), `"caCert": "ca.pem"`) {
		t.Errorf("file format: %s", data)
	}
	// Overwrite in place.
	cfg.Token = "t2"
	if err := WriteConfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadConfig(path); got.Token != "t2" {
		t.Errorf("after rewrite token = %q", got.Token)
	}
	if err := os.WriteFile(path, []byte(`{"addr":"x","tokn":"typo"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadConfig(path); err == nil || !strings.Contains(err.Error(), "tokn") {
		t.Errorf("unknown field: err = %v", err)
	}
}

func TestDefaultConfigPath(t *testing.T) {
	t.Setenv(EnvConfig, "/tmp/x/vpool.json")
	if got := DefaultConfigPath(); got != "/tmp/x/vpool.json" {
		t.Errorf("with $%s: %q", EnvConfig, got)
	}
	t.Setenv(EnvConfig, "")
	t.Setenv("XDG_CONFIG_HOME", "/home/u/.config")
	if got := DefaultConfigPath(); got != "/home/u/.config/vpool/config.json" {
		t.Errorf("default: %q", got)
	}
}

// TestCACert: an https server is trusted through caCert in the config
// file (a path relative to the file) or PEM text in the environment.
func TestCACert(t *testing.T) {
	f := newFakeTLS(t)
	seed(f)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw})
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "vpool"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vpool", "ca.pem"), caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteConfig(filepath.Join(dir, "vpool", "config.json"), Config{Addr: f.srv.URL, Token: goodToken, CACert: "ca.pem"}); err != nil {
		t.Fatal(err)
	}
	if res := (invocation{configDir: dir}).run(t, "cluster", "info"); res.code != 0 {
		t.Errorf("CA from the config file: exit %d: %s", res.code, res.stderr)
	}
	env := map[string]string{EnvAddr: f.srv.URL, EnvToken: goodToken, EnvCACert: string(caPEM)}
	if res := (invocation{env: env}).run(t, "cluster", "info"); res.code != 0 {
		t.Errorf("CA PEM from the environment: exit %d: %s", res.code, res.stderr)
	}
	res := invocation{}.run(t, "--addr", f.srv.URL, "--token", goodToken, "cluster", "info")
	if res.code != 1 || !strings.Contains(res.stderr, "certificate") {
		t.Errorf("without the CA: exit %d: %s", res.code, res.stderr)
	}
	res = invocation{}.run(t, "--addr", f.srv.URL, "--ca-cert", filepath.Join(dir, "missing.pem"), "cluster", "info")
	if res.code != 1 || !strings.Contains(res.stderr, "missing.pem") {
		t.Errorf("missing CA file: exit %d: %s", res.code, res.stderr)
	}
}

// The config `vpool dev` writes beside its data is found from the
// directory that holds the data dir and below; VPOOL_CONFIG still wins,
// and elsewhere the user's config applies.
func TestDevConfigFromWorkingDirectory(t *testing.T) {
	repo, home := t.TempDir(), t.TempDir()
	if err := WriteConfig(filepath.Join(repo, ".vpool", "config.json"), Config{Addr: "http://dev:1"}); err != nil {
		t.Fatal(err)
	}
	if err := WriteConfig(filepath.Join(home, "vpool", "config.json"), Config{Addr: "http://home:1"}); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "x.json")
	if err := WriteConfig(other, Config{Addr: "http://other:1"}); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(repo, "internal", "cli")
	os.MkdirAll(sub, 0o755)
	tests := []struct {
		name, wd string
		env      map[string]string
		want     string
	}{
		{"in the repo", repo, nil, "http://dev:1"},
		{"below it", sub, nil, "http://dev:1"},
		{"elsewhere", t.TempDir(), nil, "http://home:1"},
		{"VPOOL_CONFIG wins", sub, map[string]string{EnvConfig: other}, "http://other:1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := app{env: env{
				lookup:    func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok },
				configDir: func() (string, error) { return home, nil },
				getwd:     func() (string, error) { return tc.wd, nil },
			}}
			got, err := a.resolve()
			if err != nil || got.Addr != tc.want {
				t.Fatalf("resolve = %+v, %v; want %s", got.Config, err, tc.want)
			}
		})
	}
}

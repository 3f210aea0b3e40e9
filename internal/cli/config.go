package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/vpool/vpool/internal/client"
)

// Config is the client configuration file: $VPOOL_CONFIG, else the
// nearest .vpool/config.json in the working directory or above it (where
// `vpool dev` writes it, beside its data), else
// ~/.config/vpool/config.json. `vpool project use` sets Project in it.
type Config struct {
	// Addr is the server's address, or several servers' separated by
	// commas; Servers lists them too (one control plane, docs/ha.md).
	// The client fails over between all of them, Addr's first.
	Addr    string   `json:"addr,omitempty"`
	Servers []string `json:"servers,omitempty"`
	Token   string   `json:"token,omitempty"`
	Project string   `json:"project,omitempty"`
	// CACert is the cluster CA for https addresses: PEM text, or the path
	// of a PEM file (relative paths are relative to the config file).
	CACert string `json:"caCert,omitempty"`
}

// Environment variables the CLI reads.
const (
	EnvAddr    = "VPOOL_ADDR"
	EnvToken   = "VPOOL_TOKEN"
	EnvProject = "VPOOL_PROJECT"
	EnvConfig  = "VPOOL_CONFIG"
	EnvCACert  = "VPOOL_CA_CERT"
)

// DefaultConfigPath returns $VPOOL_CONFIG when set, else the nearest
// .vpool/config.json in the working directory or above, else config.json
// under the user's configuration directory (~/.config/vpool/config.json
// on Linux).
func DefaultConfigPath() string {
	return configPath(osEnv())
}

// DevConfigName is the config file `vpool dev` writes in its data dir,
// relative to the directory the CLI runs in.
var DevConfigName = filepath.Join(".vpool", "config.json")

func configPath(e env) string {
	if p, ok := e.lookup(EnvConfig); ok && p != "" {
		return p
	}
	if p := nearestDevConfig(e); p != "" {
		return p
	}
	dir, err := e.configDir()
	if err != nil || dir == "" {
		return filepath.Join(".vpool", "config.json")
	}
	return filepath.Join(dir, "vpool", "config.json")
}

// nearestDevConfig looks for .vpool/config.json in the working directory
// and its parents.
func nearestDevConfig(e env) string {
	if e.getwd == nil {
		return ""
	}
	dir, err := e.getwd()
	if err != nil {
		return ""
	}
	for {
		p := filepath.Join(dir, DevConfigName)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// WriteConfig writes cfg to path (creating its directory, 0700) with mode
// 0600, atomically: a reader sees the old file or the new one.
func WriteConfig(path string, cfg Config) error {
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("cli: encode config: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cli: write config: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".config-*.json")
	if err != nil {
		return fmt.Errorf("cli: write config: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("cli: write config: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("cli: write config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cli: write config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cli: write config: %w", err)
	}
	return nil
}

// ReadConfig reads a config file. A missing file is an error that
// errors.Is(err, fs.ErrNotExist) reports.
func ReadConfig(path string) (Config, error) {
	var cfg Config
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("cli: read config: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("cli: config %s: %w", path, err)
	}
	return cfg, nil
}

// resolved is the configuration in force for one command, with where the
// address came from (for error hints).
type resolved struct {
	Config
	addrFrom string
	cfgPath  string
}

// resolve applies the precedence flag > environment > config file >
// default. A config file named by --config or $VPOOL_CONFIG must exist;
// the default one may be absent.
func (a *app) resolve() (resolved, error) {
	var r resolved
	explicit := a.configFlag != ""
	r.cfgPath = a.configFlag
	if !explicit {
		if p, ok := a.env.lookup(EnvConfig); ok && p != "" {
			explicit = true
		}
		r.cfgPath = configPath(a.env)
	}
	file, err := ReadConfig(r.cfgPath)
	if err != nil && (explicit || !errors.Is(err, fs.ErrNotExist)) {
		return r, err
	}
	pick := func(flag, envName, fromFile, def string) (string, string) {
		if flag != "" {
			return flag, "flag"
		}
		if v, ok := a.env.lookup(envName); ok && v != "" {
			return v, "$" + envName
		}
		if fromFile != "" {
			return fromFile, r.cfgPath
		}
		return def, "default"
	}
	r.Addr, r.addrFrom = pick(a.addr, EnvAddr, joinAddrs(file.Addr, file.Servers), client.DefaultAddr)
	r.Token, _ = pick(a.token, EnvToken, file.Token, "")
	r.Project, _ = pick(a.project, EnvProject, file.Project, "")
	var caFrom string
	r.CACert, caFrom = pick(a.caCert, EnvCACert, file.CACert, "")
	if r.CACert != "" && !strings.Contains(r.CACert, "-----BEGIN") {
		p := r.CACert
		if caFrom == r.cfgPath && !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(r.cfgPath), p)
		}
		pem, err := os.ReadFile(p)
		if err != nil {
			return r, fmt.Errorf("cli: CA certificate: %w", err)
		}
		r.CACert = string(pem)
	}
	return r, nil
}

// outputClient checks the -o format before any request is made (a bad
// format must fail without touching the API), then returns the client.
func (a *app) outputClient() (*client.Client, error) {
	if _, err := a.format(); err != nil {
		return nil, err
	}
	return a.client()
}

// client returns the API client for this invocation, built once.
func (a *app) client() (*client.Client, error) {
	if a.cl != nil {
		return a.cl, nil
	}
	r, err := a.resolve()
	if err != nil {
		return nil, err
	}
	opts := []client.Option{client.WithUserAgent("vpool-cli/" + a.version)}
	if r.CACert != "" {
		opts = append(opts, client.WithCACert([]byte(r.CACert)))
	}
	if a.env.pollMin > 0 {
		opts = append(opts, client.WithPollInterval(a.env.pollMin, a.env.pollMax))
	}
	c, err := client.New(r.Addr, r.Token, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w (address from %s)", err, r.addrFrom)
	}
	a.cl, a.cfg = c, r
	return c, nil
}

// joinAddrs is the address list of a config file: addr's servers, then
// those of servers not in addr.
func joinAddrs(addr string, servers []string) string {
	var out []string
	seen := map[string]bool{}
	for _, a := range append(strings.Split(addr, ","), servers...) {
		if a = strings.TrimSpace(a); a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return strings.Join(out, ",")
}

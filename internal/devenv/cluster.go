package devenv

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/server"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/etcdstore"
)

// A control plane of several servers (docs/ha.md): each embeds an etcd
// member. They share two secrets: the store's private CA
// (DATA_DIR/etcd/tls/ca.crt, ca.key), which signs every member's and
// server's certificate for the store, and the seal key of the cluster CA
// (DATA_DIR/ca-seal.key). Two ways to start one:
//
//   - --join: a running server admits a new one. `vpool cluster member
//     add NAME` issues a single-use token bound to NAME and pinning the
//     cluster CA; the new server presents it to a running server's agent
//     listener (TLS it verifies against the pinned CA before it sends
//     anything), which adds its member as a learner and answers with the
//     two secrets and the membership. Any server promotes it once it has
//     caught up.
//   - --initial-cluster: every member starts together from a list. The
//     first one named creates the secrets; the others must hold copies
//     (made by the operator) before they start.

// joinWait bounds how long a joining server retries a busy membership
// (etcd admits one learner at a time, 5 s apart).
const joinWait = 2 * time.Minute

// memberConfig fills the embedded member's cluster settings of ec from
// cfg: nothing when the member has data (a restart: the membership is in
// its log), the membership a running server hands out (--join), or the
// static list (--initial-cluster).
func memberConfig(ctx context.Context, cfg ServerConfig, ec *etcdstore.Config) error {
	if cfg.PeerURL != "" {
		if err := store.CheckPeerURL(cfg.PeerURL); err != nil {
			return fmt.Errorf("devenv: --peer-url: %w", err)
		}
		ec.PeerURL = cfg.PeerURL
	}
	if len(cfg.Join) > 0 && cfg.InitialCluster != "" {
		return errors.New("devenv: give --join or --initial-cluster, not both")
	}
	if cfg.InitialCluster != "" {
		peer, first, err := ownPeerURL(cfg.InitialCluster, cfg.Name)
		if err != nil {
			return err
		}
		if cfg.PeerURL != "" && cfg.PeerURL != peer {
			return fmt.Errorf("devenv: --peer-url %s differs from %s's URL in --initial-cluster (%s)", cfg.PeerURL, cfg.Name, peer)
		}
		ec.PeerURL, ec.InitialCluster = peer, cfg.InitialCluster
		switch {
		case hasMemberData(ec.DataDir):
			return nil
		case first == cfg.Name:
			return makeSharedSecrets(cfg, ec)
		}
		return checkSharedSecrets(cfg, ec, first)
	}
	if len(cfg.Join) == 0 || hasMemberData(ec.DataDir) {
		return nil
	}
	if cfg.PeerURL == "" {
		return errors.New("devenv: --join needs --peer-url https://HOST:PORT, where this server's store member serves the others")
	}
	resp, err := joinControlPlane(ctx, cfg)
	if err != nil {
		return err
	}
	if err := installSecrets(cfg, ec, resp); err != nil {
		return err
	}
	ec.InitialCluster, ec.ClusterState = resp.InitialCluster, etcdstore.ClusterStateExisting
	return nil
}

// ownPeerURL finds name's peer URL in an initial cluster list and the
// first member's name.
func ownPeerURL(list, name string) (peer, first string, err error) {
	for i, part := range strings.Split(list, ",") {
		n, u, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || n == "" {
			return "", "", fmt.Errorf("devenv: --initial-cluster %q: want NAME=https://HOST:PORT,...", list)
		}
		if err := store.CheckPeerURL(u); err != nil {
			return "", "", fmt.Errorf("devenv: --initial-cluster: %w", err)
		}
		if i == 0 {
			first = n
		}
		if n == name && peer == "" {
			peer = u
		}
	}
	if peer == "" {
		return "", "", fmt.Errorf("devenv: --initial-cluster names no member %q (this server's --name)", name)
	}
	return peer, first, nil
}

// hasMemberData says whether dir holds an etcd member already.
func hasMemberData(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "member", "wal"))
	return err == nil
}

func sealKeyPath(cfg ServerConfig) string {
	if cfg.CAKeyFile != "" {
		return cfg.CAKeyFile
	}
	return filepath.Join(cfg.DataDir, server.DefaultCAKeyFile)
}

func tlsDir(ec *etcdstore.Config) string {
	if ec.TLSDir != "" {
		return ec.TLSDir
	}
	return filepath.Join(ec.DataDir, "tls")
}

// checkSharedSecrets refuses to start a member of a static cluster that
// lacks the shared secrets: it would make a CA of its own, which the
// other members refuse, or a second cluster CA.
func checkSharedSecrets(cfg ServerConfig, ec *etcdstore.Config, first string) error {
	need := []string{filepath.Join(tlsDir(ec), "ca.crt"), filepath.Join(tlsDir(ec), "ca.key"), sealKeyPath(cfg)}
	var missing []string
	for _, p := range need {
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, p)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("devenv: --initial-cluster: %s is not the first member (%s), and it lacks %s: copy those files (mode 0600) from %s's data dir, "+
		"or start %s alone and add this server with `vpool cluster member add %s` and --join", cfg.Name, first, strings.Join(missing, ", "), first, first, cfg.Name)
}

// makeSharedSecrets makes, on the first member of a static cluster, the
// secrets the others need copies of before they start: the store's CA
// and the seal key (which the server would otherwise make only once the
// store is up, which takes a quorum).
func makeSharedSecrets(cfg ServerConfig, ec *etcdstore.Config) error {
	if _, err := pki.EnsureLocalTLS(tlsDir(ec), cfg.Name, nil, time.Now()); err != nil {
		return fmt.Errorf("devenv: --initial-cluster: %w", err)
	}
	path := sealKeyPath(cfg)
	if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil // present (the server checks it), or unreadable (it says so)
	}
	key, err := pki.NewSealKey()
	if err != nil {
		return err
	}
	if err := pki.WriteSealKey(path, key); err != nil {
		return fmt.Errorf("devenv: --initial-cluster: %w", err)
	}
	return nil
}

// joinControlPlane asks the running servers, in turn, to admit this one.
func joinControlPlane(ctx context.Context, cfg ServerConfig) (*api.ServerJoinResponse, error) {
	caHash, _, err := pki.ParseJoinToken(cfg.JoinToken)
	if err != nil {
		return nil, fmt.Errorf("devenv: --join needs a server join token (vpool cluster member add %s) from --join-token-file or VPOOL_JOIN_TOKEN: %w", cfg.Name, err)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Checked against the CA the token pins instead of system roots.
		InsecureSkipVerify:    true, //nolint:gosec // VerifyPeerCertificate checks the pinned CA
		VerifyPeerCertificate: pki.VerifyPinned(caHash),
	}}}
	defer hc.CloseIdleConnections()
	body, _ := json.Marshal(api.ServerJoinRequest{Name: cfg.Name, PeerURL: cfg.PeerURL})
	deadline := time.Now().Add(joinWait)
	var lastErr error
	for attempt := 0; ; attempt++ {
		base := strings.TrimSuffix(cfg.Join[attempt%len(cfg.Join)], "/")
		resp, retry, err := postJoin(ctx, hc, base, cfg.JoinToken, body)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		if !retry || time.Now().After(deadline) {
			return nil, fmt.Errorf("devenv: join the control plane through %s: %w", base, lastErr)
		}
		cfg.Logger.Info("joining the control plane: retrying", "through", base, "err", err)
		if !sleepCtx(ctx, min(time.Second<<min(attempt, 3), 5*time.Second)) {
			return nil, ctx.Err()
		}
	}
}

// postJoin makes one join request; retry says whether another server or
// a later attempt may succeed.
func postJoin(ctx context.Context, hc *http.Client, base, token string, body []byte) (*api.ServerJoinResponse, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+api.AgentPrefix+"/members/join", bytes.NewReader(body))
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := hc.Do(req)
	if err != nil {
		return nil, true, err
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if res.StatusCode != http.StatusOK {
		var ae api.Error
		if json.Unmarshal(data, &ae) != nil || ae.Message == "" {
			ae.Message = strings.TrimSpace(string(data))
		}
		return nil, res.StatusCode >= 500, fmt.Errorf("server said %d: %s", res.StatusCode, ae.Message)
	}
	var out api.ServerJoinResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, false, fmt.Errorf("decode join answer: %w", err)
	}
	return &out, false, nil
}

// installSecrets writes the store's CA and the seal key a join brought,
// refusing to replace different ones (a data dir of another cluster).
func installSecrets(cfg ServerConfig, ec *etcdstore.Config, resp *api.ServerJoinResponse) error {
	seal, err := hex.DecodeString(resp.SealKey)
	if err != nil || len(seal) != pki.SealKeySize {
		return errors.New("devenv: join: the server sent no valid seal key")
	}
	dir := tlsDir(ec)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("devenv: join: %w", err)
	}
	files := []struct {
		path string
		data []byte
	}{{filepath.Join(dir, "ca.crt"), []byte(resp.EtcdCACert)}, {filepath.Join(dir, "ca.key"), []byte(resp.EtcdCAKey)}}
	for _, f := range files {
		if err := writeOnce(f.path, f.data); err != nil {
			return err
		}
	}
	path := sealKeyPath(cfg)
	if have, err := pki.ReadSealKey(path); err == nil {
		if !bytes.Equal(have, seal) {
			return fmt.Errorf("devenv: join: %s holds another cluster's seal key; join with a fresh data dir", path)
		}
		return nil
	}
	if err := pki.WriteSealKey(path, seal); err != nil {
		return fmt.Errorf("devenv: join: %w", err)
	}
	return nil
}

// writeOnce writes a 0600 file, or checks that it holds data already.
func writeOnce(path string, data []byte) error {
	have, err := os.ReadFile(path)
	switch {
	case err == nil && bytes.Equal(have, data):
		return nil
	case err == nil:
		return fmt.Errorf("devenv: join: %s holds another cluster's store CA; join with a fresh data dir", path)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("devenv: join: %w", err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("devenv: join: %w", err)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

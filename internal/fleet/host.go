package fleet

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
)

// host is one simulated host.
type host struct {
	f      *Fleet
	name   string
	client *http.Client
	server int // index of the server it talks to now (mu)
	// certPEM, keyPEM and caPEM are its identity (identity.go)
	certPEM, keyPEM, caPEM []byte

	mu       sync.Mutex
	vms      map[string]*simVM // assigned VMs by project/name
	interval time.Duration     // what the server last said
	// fails counts the beats that failed in a row (only the host's one
	// beat in flight reads and writes it)
	fails int
	// compact: the server last said it takes compact heartbeats
	compact atomic.Bool
}

// simVM is one VM assigned to a fleet host.
type simVM struct {
	vm       model.VM
	reported model.Phase // what the server accepted from us last
	retry    bool        // a report failed: the next answer sends it again
	trace    int
	cpuNs    int64
	lastAt   time.Time
}

// statusError is a non-2xx answer.
type statusError struct{ code int }

func (e statusError) Error() string { return fmt.Sprintf("fleet: server answered %d", e.code) }

func codeOf(err error) int {
	var se statusError
	if errors.As(err, &se) {
		return se.code
	}
	return 0
}

// join makes a key and has the server sign its certificate, then opens
// the host's client: its certificate, the cluster CA the token pins, the
// server role checked, HTTP/2 so that the poll, the beats and the reports
// share one connection.
func (h *host) join(ctx context.Context, token string) error {
	caHash, _, err := pki.ParseJoinToken(token)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	keyPEM, csrPEM, err := pki.NewKeyAndCSR(h.name)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	pinned := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, //nolint:gosec // VerifyPinned checks the chain
		VerifyPeerCertificate: pki.VerifyPinned(caHash)}}}
	defer pinned.CloseIdleConnections()
	var jr api.JoinResponse
	err = h.call(ctx, pinned, http.MethodPost, api.AgentPrefix+"/join", token, api.JoinRequest{Host: h.name, CSRPEM: string(csrPEM)}, &jr)
	if err != nil {
		return fmt.Errorf("fleet: join %s: %w", h.name, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(jr.CAPEM)) || pki.CertHash(firstDER([]byte(jr.CAPEM))) != caHash {
		return fmt.Errorf("fleet: the CA the server returned to %s is not the token's", h.name)
	}
	return h.open([]byte(jr.CertPEM), keyPEM, []byte(jr.CAPEM), roots)
}

// call does one JSON request against the host's server (a bearer only
// for the join).
func (h *host) call(ctx context.Context, c *http.Client, method, path, bearer string, in, out any) error {
	var body io.Reader
	ctype := "application/json"
	if raw, ok := in.(rawBody); ok {
		body, ctype = bytes.NewReader(raw.b), raw.ctype
	} else if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	h.mu.Lock()
	base := h.f.cfg.Servers[h.server]
	h.mu.Unlock()
	req, err := http.NewRequestWithContext(ctx, method, base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ctype)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		h.failover()
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return statusError{resp.StatusCode}
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

// rawBody is a request body already encoded, with its Content-Type.
type rawBody struct {
	b     []byte
	ctype string
}

// failover moves the host to the next server after a transport error.
func (h *host) failover() {
	if n := len(h.f.cfg.Servers); n > 1 {
		h.mu.Lock()
		h.server = (h.server + 1) % n
		h.mu.Unlock()
	}
}

// firstDER is the first PEM block's bytes.
func firstDER(p []byte) []byte {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil
	}
	return b.Bytes
}

// nextInterval is when the host beats next: the server's interval with
// ±10% jitter, so that hosts do not beat in step.
func (h *host) nextInterval() time.Duration {
	h.mu.Lock()
	iv := h.interval
	h.mu.Unlock()
	if iv <= 0 {
		iv = 3 * time.Second
	}
	return iv - iv/10 + time.Duration(rand.Int64N(int64(iv/5)+1))
}

// beat sends one heartbeat (inventory, usage of every running VM) and
// returns when the next is due, as the real agent does: one interval
// after this one's send when it succeeded (the interval the answer
// gives), after a backoff from 200 ms (at most the interval) when not.
func (h *host) beat(ctx context.Context) time.Time {
	hb := h.heartbeat()
	var resp api.HeartbeatResponse
	t0 := time.Now()
	var in any = hb
	compact := h.compact.Load()
	if compact {
		if b, ok := api.EncodeHeartbeatCompact(&hb); ok {
			in = rawBody{b, api.HeartbeatCompactType}
		}
	}
	err := h.call(ctx, h.client, http.MethodPut, api.AgentPrefix+"/heartbeat", "", in, &resp)
	if ctx.Err() != nil {
		return time.Now()
	}
	var se statusError
	if compact && errors.As(err, &se) && (se.code == http.StatusBadRequest || se.code == http.StatusUnsupportedMediaType) {
		h.compact.Store(false) // a server that does not take it: JSON from now on
	}
	if err == nil {
		h.compact.Store(slices.Contains(resp.Accepts, api.HeartbeatCompactType) && !h.f.cfg.JSONHeartbeats)
	}
	h.f.stats.beat(time.Since(t0), err)
	if err != nil {
		h.f.log.Debug("heartbeat failed", "host", h.name, "err", err)
		h.fails++
		return time.Now().Add(min(200*time.Millisecond<<min(h.fails-1, 6), h.nextInterval()))
	}
	h.fails = 0
	iv := time.Duration(resp.IntervalMillis) * time.Millisecond
	if iv <= 0 {
		iv = time.Duration(resp.IntervalSeconds) * time.Second
	}
	if iv > 0 {
		h.mu.Lock()
		h.interval = iv
		h.mu.Unlock()
	}
	return t0.Add(h.nextInterval())
}

// heartbeat builds a heartbeat from the VMs' trace patterns now.
func (h *host) heartbeat() api.Heartbeat {
	f := h.f
	hb := api.Heartbeat{Host: h.name, Labels: f.cfg.Labels, Capacity: f.cfg.Capacity, Driver: "fleet", Accel: "sim",
		Version: f.cfg.Version}
	now := time.Now()
	sample := int(f.elapsed() / f.cfg.TraceStep)
	h.mu.Lock()
	defer h.mu.Unlock()
	var cpu float64
	for key, v := range h.vms {
		if v.reported != model.PhaseRunning {
			continue
		}
		frac := f.cpuFraction(v.trace, sample)
		pct := frac * 100 * float64(max(v.vm.Spec.VCPUs, 1))
		if !v.lastAt.IsZero() {
			v.cpuNs += int64(pct / 100 * float64(now.Sub(v.lastAt)))
		}
		v.lastAt = now
		mem := model.Bytes(float64(v.vm.Spec.Memory) * (0.25 + 0.5*frac))
		cpu += pct
		hb.Usage.MemoryUsed += mem
		hb.Usage.DiskUsed += v.vm.Spec.DiskSize()
		p, n, _ := cut(key)
		hb.VMs = append(hb.VMs, api.VMReport{Project: p, Name: n, UID: v.vm.UID, Phase: model.PhaseRunning,
			Usage: model.VMUsage{CPUPercent: pct, CPUTimeNs: v.cpuNs, Memory: mem}})
	}
	if f.cfg.Capacity.CPUs > 0 {
		hb.Usage.CPUPercent = cpu / float64(f.cfg.Capacity.CPUs)
	}
	return hb
}

// cpuFraction is trace VM i's CPU utilisation at sample s (the trace
// wraps around); 10% without a trace.
func (f *Fleet) cpuFraction(i, s int) float64 {
	t := f.cfg.Trace
	if t == nil {
		return 0.1
	}
	cpu := t.VMs[i%len(t.VMs)].CPU
	return cpu[s%len(cpu)]
}

func traceIndex(key string) int {
	x := fnv.New32a()
	_, _ = x.Write([]byte(key))
	return int(x.Sum32() >> 1)
}

func cut(key string) (string, string, bool) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:], true
		}
	}
	return key, "", false
}

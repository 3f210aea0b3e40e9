package server

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// usageRefresh is how often an unchanged VM's usage is written back from
// heartbeats: phase changes are written at once, usage at most this often,
// so that thousands of VMs do not mean thousands of writes per beat.
const usageRefresh = 10 * time.Second

// servedSet is what one assignments answer held for a host.
type servedSet struct {
	rev  int64
	keys map[string]bool
}

type agentHandler func(w http.ResponseWriter, r *http.Request, host string) error

// agentEndpoint is one agent protocol route.
type agentEndpoint struct {
	method, path string
	handle       agentHandler
	needCert     bool
	// certInTxn: the handler checks that the certificate is its host's
	// inside its own transaction (heartbeat); agentWrap checks only the
	// revocations.
	certInTxn bool
	req, resp any
	status    int
	query     []string
}

func (s *Server) agentEndpoints() []agentEndpoint {
	return slices.Concat(s.agentMigrationEndpoints(), s.lbAgentEndpoints(), s.memberAgentEndpoints(), s.vmOpAgentEndpoints(), s.imageAgentEndpoints(), []agentEndpoint{
		{method: "POST", path: "/agent/v1/join", handle: s.join, req: api.JoinRequest{}, resp: api.JoinResponse{}, status: 200},
		{method: "PUT", path: "/agent/v1/heartbeat", handle: s.heartbeat, needCert: true, certInTxn: true, req: api.Heartbeat{}, resp: api.HeartbeatResponse{}, status: 200},
		{method: "GET", path: "/agent/v1/assignments", handle: s.assignments, needCert: true, resp: api.Assignments{}, status: 200, query: []string{"after", "wait"}},
		{method: "GET", path: "/agent/v1/networks", handle: s.hostNetworks, needCert: true, resp: api.HostNetworks{}, status: 200, query: []string{"etag", "wait"}},
		{method: "PUT", path: "/agent/v1/vms/{project}/{name}/status", handle: s.vmStatus, needCert: true, req: api.VMReport{}, resp: model.VM{}, status: 200},
		{method: "GET", path: "/agent/v1/power", handle: s.hostPower, needCert: true, resp: api.HostPowerState{}, status: 200},
	})
}

// agentRoutes builds the agent listener's handler; it checks that the
// endpoints are exactly api.AgentRoutes.
func (s *Server) agentRoutes() (http.Handler, error) {
	want := map[string]bool{}
	for _, rt := range api.AgentRoutes {
		want[rt.Method+" "+rt.Path] = true
	}
	mux := http.NewServeMux()
	for _, e := range s.agentEndpoints() {
		key := e.method + " " + e.path
		if !want[key] {
			return nil, fmt.Errorf("server: agent endpoint %s is not in api.AgentRoutes", key)
		}
		delete(want, key)
		mux.Handle(key, s.agentWrap(key, e))
	}
	for k := range want {
		return nil, fmt.Errorf("server: api.AgentRoutes has %s but no handler serves it", k)
	}
	return mux, nil
}

// agentWrap requires a verified client certificate (unless !needCert)
// that is still its host's (not revoked, not replaced), takes the host
// name from its CN, and writes errors as api.Error.
func (s *Server) agentWrap(route string, e agentEndpoint) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		host, leaf, err := peerHost(r.TLS)
		if err != nil {
			err = forbidden("%v", err)
		}
		if err == nil && e.needCert && host == "" {
			err = unauthorized("this endpoint needs the agent's client certificate (join first)")
		}
		if err == nil && leaf != nil {
			serial := pki.SerialHex(leaf.SerialNumber)
			if e.certInTxn {
				if s.trust.revoked(serial) {
					err = state.ErrCertRevoked
				}
			} else {
				err = s.trust.check(r.Context(), host, serial)
			}
			err = certRefused(host, err)
		}
		if err == nil {
			err = e.handle(sw, r, host)
		}
		if err != nil {
			he := toHTTP(err)
			if he.body.Code == api.CodeInternal {
				s.log.Error("agent request failed", "route", route, "host", host, "err", err)
			}
			if sw.status == 0 {
				writeJSON(sw, he.status, he.body)
			}
		}
		code := sw.status
		if code == 0 {
			code = http.StatusOK
		}
		s.metrics.APILatency.WithLabelValues(route, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
		s.log.Debug("agent request", "route", route, "host", host, "code", code, "dur", time.Since(start))
	})
}

// join exchanges a join token and a CSR for a client certificate. The
// token loses one use in the transaction that binds the host name to the
// certificate; a name already joined needs a re-key token of that name
// (vpool host rekey), and its old certificate is revoked.
func (s *Server) join(w http.ResponseWriter, r *http.Request, _ string) error {
	bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	caHash, secret, err := pki.ParseJoinToken(bearer)
	if err != nil {
		return unauthorized("join needs a join token as bearer (vpool host join-token)")
	}
	if subtle.ConstantTimeCompare([]byte(caHash), []byte(s.ca.Hash())) != 1 {
		return unauthorized("the join token is for another cluster (CA hash differs)")
	}
	var req api.JoinRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	if err := model.ValidName("host", req.Host); err != nil {
		return err
	}
	var cert pki.HostCert
	_, err = s.repo.Join(r.Context(), state.HashSecret(secret), req.Host, func() (state.HostIdentity, error) {
		var err error
		if cert, err = s.ca.IssueHost([]byte(req.CSRPEM), req.Host, AgentCertTTL, s.now()); err != nil {
			return state.HostIdentity{}, fieldError("csr", "%v", err)
		}
		return state.HostIdentity{Serial: cert.Serial, NotAfter: cert.NotAfter, IssuedAt: s.now()}, nil
	})
	switch {
	case errors.Is(err, state.ErrTokenInvalid):
		return unauthorized("invalid join token: it is unknown, used up or revoked; issue a new one with vpool host join-token")
	case errors.Is(err, state.ErrTokenExpired):
		return unauthorized("the join token has expired; issue a new one with vpool host join-token")
	case errors.Is(err, state.ErrTokenHost):
		return forbidden("host: this re-key token is for another host (%v)", err)
	case errors.Is(err, state.ErrHostJoined):
		return errf(http.StatusConflict, api.CodeConflict, "host", "a host named %q has joined already; to give it a new key run `vpool host rekey %s` and join with that token, or choose another name", req.Host, req.Host)
	case err != nil:
		return err
	}
	s.log.Info("host joined", "host", req.Host, "serial", cert.Serial)
	writeJSON(w, http.StatusOK, api.JoinResponse{CertPEM: string(cert.PEM), CAPEM: string(s.ca.CertPEM)})
	return nil
}

// ensureLease keeps the host's liveness lease alive, granting a new one
// when there is none (or it expired); it returns the op that attaches the
// alive key when a new lease was granted.
func (s *Server) ensureLease(ctx context.Context, host string) ([]store.Op, error) {
	s.leaseMu.Lock()
	id, ok := s.leases[host]
	s.leaseMu.Unlock()
	if ok {
		err := s.cfg.Store.KeepAlive(ctx, id)
		if err == nil {
			if _, gerr := s.cfg.Store.Get(ctx, store.AliveKey(host)); gerr == nil {
				return nil, nil
			}
			// the alive key is gone (host deleted, or another server's
			// lease): attach it to ours again
			return []store.Op{store.PutWithLease(store.AliveKey(host), []byte(s.Addr()), id)}, nil
		}
		if !errors.Is(err, store.ErrNoLease) {
			return nil, err
		}
	}
	id, err := s.cfg.Store.Grant(ctx, int64(LeaseTTL/time.Second))
	if err != nil {
		return nil, err
	}
	s.leaseMu.Lock()
	s.leases[host] = id
	s.leaseMu.Unlock()
	return []store.Op{store.PutWithLease(store.AliveKey(host), []byte(s.Addr()), id)}, nil
}

// heartbeat renews the host's lease, updates its inventory (never its
// operator fields), marks it ready if it was down, and applies VM reports.
func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request, host string) error {
	var hb api.Heartbeat
	if he := decodeJSON(w, r, &hb); he != nil {
		return he
	}
	if hb.Host != "" && hb.Host != host {
		return forbidden("certificate is for host %q, heartbeat names %q", host, hb.Host)
	}
	_, leaf, err := peerHost(r.TLS)
	if err != nil || leaf == nil {
		return unauthorized("a heartbeat needs the host's client certificate")
	}
	ctx := r.Context()
	serial := pki.SerialHex(leaf.SerialNumber)
	// refused before a lease is granted; the transaction checks again
	if err := s.trust.check(ctx, host, serial); errors.Is(err, state.ErrNotJoined) {
		// a host record from before bindings adopts this certificate
		if _, gerr := s.repo.GetHost(ctx, host); gerr != nil {
			return certRefused(host, err)
		}
	} else if err != nil {
		return certRefused(host, err)
	}
	guard := s.repo.HeartbeatGuard(host, serial, leaf.NotAfter)
	alive, err := s.ensureLease(ctx, host)
	if err != nil {
		return err
	}
	now := s.now()
	stored, err := s.repo.UpsertHostGuarded(ctx, host, guard, func(h *model.Host, exists bool) error {
		h.Capacity, h.Driver, h.Accel, h.Pools = hb.Capacity, hb.Driver, hb.Accel, hb.Pools
		h.Address, h.AgentVer, h.Usage, h.LastSeen = hb.Address, hb.Version, hb.Usage, now
		h.CPUModel, h.HypervisorVersion, h.Networks = hb.CPUModel, hb.HypervisorVersion, hb.Networks
		h.Net = hb.Net
		h.MachineType = hb.MachineType
		for k, v := range hb.Labels {
			if _, set := h.Labels[k]; !set {
				if h.Labels == nil {
					h.Labels = map[string]string{}
				}
				h.Labels[k] = v
			}
		}
		if !exists || h.State == model.HostDown || h.State == "" {
			h.State = model.HostReady
		}
		return nil
	}, alive...)
	if err != nil {
		return certRefused(host, err)
	}
	for _, rep := range hb.VMs {
		if _, err := s.applyReport(ctx, host, rep, false, true); err != nil && !errors.Is(err, errNotYours) && !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("applying VM report", "host", host, "vm", rep.Project+"/"+rep.Name, "err", err)
		}
	}
	resp := api.HeartbeatResponse{IntervalSeconds: int(HeartbeatInterval / time.Second), LeaseTTLSeconds: int(LeaseTTL / time.Second)}
	if desiredPower(stored) == model.HostPowerStandby {
		resp.Power = model.HostPowerStandby
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

var errNotYours = errors.New("server: vm is not assigned to this host")

// applyReport applies one agent report to a VM. force writes even when
// only usage changed.
//
// Heartbeats carry usage only (usageOnly): phase, error and restart nonce
// come from status reports alone, so a heartbeat built a moment before a
// status report can never roll them back.
func (s *Server) applyReport(ctx context.Context, host string, rep api.VMReport, force, usageOnly bool) (*model.VM, error) {
	finish := false
	now := s.now()
	vm, err := s.repo.UpdateVM(ctx, rep.Project, rep.Name, func(v *model.VM) error {
		if v.Status.Host != host {
			return errNotYours
		}
		if rep.UID != "" && v.UID != rep.UID {
			return errNotYours
		}
		if usageOnly {
			if now.Sub(v.Status.ObservedAt) < usageRefresh {
				return state.ErrSkip
			}
			v.Status.Usage, v.Status.ObservedAt = rep.Usage, now
			return nil
		}
		if rep.Gone && v.DeletedAt != nil {
			finish = true
			return state.ErrSkip
		}
		phase := v.Status.Phase
		switch {
		case rep.Gone:
			// the VM vanished from the host without being deleted
			phase = model.PhaseFailed
			if rep.Error == "" {
				rep.Error = "the VM disappeared from its host"
			}
		case v.DeletedAt != nil:
			phase = model.PhaseDeleting
		case rep.Phase == model.PhaseRunning && v.Spec.Power == model.PowerStopped && phase == model.PhaseStopping:
			// still on its way down
		case rep.Phase != "":
			phase = rep.Phase
		}
		resized := applyResizeResult(v, rep.Resize)
		changed := resized || phase != v.Status.Phase || rep.Error != v.Status.LastError || rep.Message != v.Status.Message ||
			(rep.Disks != nil && !sameDiskStatus(v.Status.Disks, rep.Disks)) ||
			rep.AppliedRestartNonce != v.Status.AppliedRestartNonce
		if !changed && !force && now.Sub(v.Status.ObservedAt) < usageRefresh {
			return state.ErrSkip
		}
		restarted := rep.AppliedRestartNonce > v.Status.AppliedRestartNonce
		if phase == model.PhaseRunning && (v.Status.Phase != model.PhaseRunning || restarted) {
			t := now
			v.Status.StartedAt = &t
		}
		if rep.Disks != nil {
			v.Status.Disks = rep.Disks
		}
		v.Status.Phase, v.Status.LastError, v.Status.Message = phase, rep.Error, rep.Message
		v.Status.Usage, v.Status.AppliedRestartNonce, v.Status.ObservedAt = rep.Usage, rep.AppliedRestartNonce, now
		return nil
	})
	if err != nil {
		return nil, err
	}
	if finish {
		return vm, s.repo.FinishDeleteVM(ctx, rep.Project, rep.Name)
	}
	return vm, nil
}

// vmStatus applies one VM report.
func (s *Server) vmStatus(w http.ResponseWriter, r *http.Request, host string) error {
	var rep api.VMReport
	if he := decodeJSON(w, r, &rep); he != nil {
		return he
	}
	project, name := r.PathValue("project"), r.PathValue("name")
	if (rep.Project != "" && rep.Project != project) || (rep.Name != "" && rep.Name != name) {
		return badRequest("the body names %s/%s but the path %s/%s", rep.Project, rep.Name, project, name)
	}
	rep.Project, rep.Name = project, name
	vm, err := s.applyReport(r.Context(), host, rep, true, false)
	switch {
	case errors.Is(err, errNotYours):
		return conflict("VM %s/%s is not assigned to host %s", project, name, host)
	case errors.Is(err, store.ErrNotFound):
		return notFound("VM %s/%s not found", project, name)
	case err != nil:
		return err
	}
	if rep.Gone {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	writeJSON(w, http.StatusOK, vm)
	return nil
}

// assignedTo lists the VMs assigned to host, the listing's revision and
// their keys.
func (s *Server) assignedTo(ctx context.Context, host string) ([]model.VM, int64, map[string]bool, error) {
	kvs, rev, err := s.cfg.Store.List(ctx, store.VMsPrefix)
	if err != nil {
		return nil, 0, nil, err
	}
	needle := []byte(`"host":"` + host + `"`)
	vms := []model.VM{}
	keys := map[string]bool{}
	for _, kv := range kvs {
		if !bytes.Contains(kv.Value, needle) {
			continue
		}
		v, err := state.DecodeVM(kv)
		if err != nil {
			return nil, 0, nil, err
		}
		if v.Status.Host == host {
			vms = append(vms, *v)
			keys[kv.Key] = true
		}
	}
	return vms, rev, keys, nil
}

// assignments answers the VMs assigned to the calling host; with
// after=REV it waits (up to wait, at most 60s) until a VM of this host
// changed after REV.
func (s *Server) assignments(w http.ResponseWriter, r *http.Request, host string) error {
	q := r.URL.Query()
	var after int64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return fieldError("after", "must be a store revision, got %q", v)
		}
		after = n
	}
	wait := 30 * time.Second
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fieldError("wait", "must be a duration like 30s, got %q", v)
		}
		wait = min(d, 60*time.Second)
	}
	ctx, cancel := s.streamContext(r)
	defer cancel()
	s.leaseMu.Lock()
	prev, known := s.served[host]
	s.leaseMu.Unlock()
	if after > 0 && known && prev.rev == after && wait > 0 {
		s.waitForChange(ctx, host, after, prev.keys, wait)
	}
	vms, rev, keys, err := s.assignedTo(r.Context(), host)
	if err != nil {
		return err
	}
	snaps, err := s.snapshotsOf(r.Context(), host, keys)
	if err != nil {
		return err
	}
	s.leaseMu.Lock()
	s.served[host] = servedSet{rev: rev, keys: keys}
	s.leaseMu.Unlock()
	writeJSON(w, http.StatusOK, api.Assignments{Revision: rev, VMs: vms, Snapshots: snaps})
	return nil
}

// waitForChange blocks until a VM that was or now is on host changes
// after revision after, or wait passes, or ctx ends.
func (s *Server) waitForChange(ctx context.Context, host string, after int64, had map[string]bool, wait time.Duration) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	go s.watchSnapshots(wctx, host, after, cancel)
	needle := []byte(`"host":"` + host + `"`)
	for resp := range s.cfg.Store.Watch(wctx, store.VMsPrefix, after+1) {
		if resp.Err != nil {
			return // compacted or closed: answer now with a fresh listing
		}
		for _, ev := range resp.Events {
			if had[ev.KV.Key] {
				return
			}
			if ev.Type == store.EventPut && bytes.Contains(ev.KV.Value, needle) {
				if v, err := state.DecodeVM(ev.KV); err != nil || v.Status.Host == host {
					return
				}
			}
		}
	}
}

func sameDiskStatus(x, y []model.DiskStatus) bool {
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

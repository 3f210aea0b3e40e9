package server

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
	// audit names the kind of object a call of this route acts on
	// ("host", "cluster/members"): such calls (the joins, which issue a
	// certificate or hand over the cluster's secrets) are audit records.
	audit string
}

func (s *Server) agentEndpoints() []agentEndpoint {
	return slices.Concat(s.agentMigrationEndpoints(), s.lbAgentEndpoints(), s.memberAgentEndpoints(), s.vmOpAgentEndpoints(), s.imageAgentEndpoints(), s.backupAgentEndpoints(), []agentEndpoint{
		{method: "POST", path: "/agent/v1/join", handle: s.join, req: api.JoinRequest{}, resp: api.JoinResponse{}, status: 200, audit: "host"},
		{method: "POST", path: "/agent/v1/migration-cert", handle: s.migrationCert, needCert: true, req: api.MigrationCertRequest{}, resp: api.MigrationCertResponse{}, status: 200, audit: "host"},
		{method: "PUT", path: "/agent/v1/heartbeat", handle: s.heartbeat, needCert: true, certInTxn: true, req: api.Heartbeat{}, resp: api.HeartbeatResponse{}, status: 200},
		{method: "GET", path: "/agent/v1/assignments", handle: s.assignments, needCert: true, resp: api.Assignments{}, status: 200, query: []string{"after", "wait", "delta"}},
		{method: "GET", path: "/agent/v1/networks", handle: s.hostNetworks, needCert: true, resp: api.HostNetworks{}, status: 200, query: []string{"etag", "wait"}},
		{method: "PUT", path: "/agent/v1/vms/{project}/{name}/status", handle: s.vmStatus, needCert: true, req: api.VMReport{}, resp: model.VM{}, status: 200},
		{method: "GET", path: "/agent/v1/vms/{project}/{name}/owner", handle: s.vmOwner, needCert: true, resp: model.DiskOwner{}, status: 200},
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
	return boundFrames(mux), nil
}

// agentWrap requires a verified client certificate (unless !needCert)
// that is still its host's (not revoked, not replaced), takes the host
// name from its CN, and writes errors as api.Error.
func (s *Server) agentWrap(route string, e agentEndpoint) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		var note *auditNote
		if e.audit != "" {
			r, note = withAuditNote(r, route)
		}
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
			beat := e.path == "/agent/v1/heartbeat"
			if ok, wait := s.hostLimits.allow(host, beat, s.now()); !ok {
				err = s.hostLimits.tooManyRequests(sw, host, beat, wait)
			}
		}
		if err == nil {
			err = e.handle(sw, r, host)
		}
		var he *httpError
		if err != nil {
			he = toHTTP(err)
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
		if note != nil {
			s.auditJoin(r, route, e.audit, code, he, note)
		}
		codeText := "200" // no string made for the answer of nearly every call
		if code != http.StatusOK {
			codeText = strconv.Itoa(code)
		}
		s.metrics.APILatency.WithLabelValues(route, codeText).Observe(time.Since(start).Seconds())
		if s.log.Enabled(r.Context(), slog.LevelDebug) { // its arguments are allocated before it looks
			s.log.Debug("agent request", "route", route, "host", host, "code", code, "dur", time.Since(start))
		}
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
	noteObject(r, req.Host)
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

// migrationCert issues the calling host's migration-only certificate
// (pki.IssueMigration): the key its QEMUs hold to secure migration
// streams. A QEMU escape that takes it can join migrations as a peer
// (VP-10), but never speak for the host here: the agent listener refuses
// the migration role (pki.HostOf), so it reads none of the host's VMs'
// secrets (VP-11). Issued like a certificate at a join, and recorded.
func (s *Server) migrationCert(w http.ResponseWriter, r *http.Request, host string) error {
	var req api.MigrationCertRequest
	if he := decodeJSON(w, r, &req); he != nil {
		return he
	}
	noteObject(r, host)
	cert, err := s.ca.IssueMigration([]byte(req.CSRPEM), host, AgentCertTTL, s.now())
	if err != nil {
		return fieldError("csr", "%v", err)
	}
	s.log.Info("migration certificate issued", "host", host, "serial", cert.Serial)
	writeJSON(w, http.StatusOK, api.MigrationCertResponse{CertPEM: string(cert.PEM), CAPEM: string(s.ca.CertPEM), NotAfter: cert.NotAfter})
	return nil
}

var errNotYours = errors.New("server: vm is not assigned to this host")

// errFinish says a report of a deleted VM's removal finishes the delete.
var errFinish = errors.New("server: finish the deletion")

// applyReport applies one agent report to a VM, reading and writing it
// in a transaction of its own.
func (s *Server) applyReport(ctx context.Context, host string, rep api.VMReport) (*model.VM, error) {
	finish := false
	now := s.now()
	vm, err := s.repo.UpdateVM(ctx, rep.Project, rep.Name, func(v *model.VM) error {
		err := reportChange(v, host, rep, now)
		if errors.Is(err, errFinish) {
			finish = true
			return state.ErrSkip
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if finish {
		return vm, s.repo.FinishDeleteVM(ctx, rep.Project, rep.Name)
	}
	return vm, nil
}

// reportChange applies an agent's status report to v: phase, error,
// message, restart nonce, disks, resize result and usage (errNotYours:
// the VM is not on host; errFinish: the VM was deleted and is gone now).
// Phases come from status reports alone, never from heartbeats, so a
// heartbeat built a moment before a report cannot roll them back.
func reportChange(v *model.VM, host string, rep api.VMReport, now time.Time) error {
	if v.Status.Host != host || (rep.UID != "" && v.UID != rep.UID) {
		return errNotYours
	}
	if rep.Gone && v.DeletedAt != nil {
		return errFinish
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
	applyResizeResult(v, rep.Resize)
	restarted := rep.AppliedRestartNonce > v.Status.AppliedRestartNonce
	if phase == model.PhaseRunning && (v.Status.Phase != model.PhaseRunning || restarted) {
		t := now
		v.Status.StartedAt = &t
	}
	if rep.Disks != nil {
		v.Status.Disks = rep.Disks
	}
	if w := rep.Watchdog; w != nil && (v.Status.Watchdog == nil || w.At.After(v.Status.Watchdog.At)) {
		f := *w
		if f.At.After(now) {
			f.At = now // a host's clock ahead of ours does not date the firing
		}
		v.Status.Watchdog = &f
	}
	v.Status.Phase, v.Status.LastError, v.Status.Message = phase, rep.Error, rep.Message
	v.Status.Usage, v.Status.AppliedRestartNonce, v.Status.ObservedAt = rep.Usage, rep.AppliedRestartNonce, now
	return nil
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
	if err := rep.Watchdog.Validate(); err != nil {
		return err
	}
	vm, raw, err := s.reportStatus(r.Context(), host, rep)
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
	if raw != nil {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(append(s.hostVMJSON(host, raw), '\n'))
		return nil
	}
	c := *vm
	if err := s.openForHost(c.Project, &c.Spec); err != nil {
		s.log.Error("the VM's user data does not open: its host gets it sealed and will not start it", "vm", c.Key(), "host", host, "err", err)
	}
	writeJSON(w, http.StatusOK, &c)
	return nil
}

// vmOwner answers the owner record of a VM's disks from the store itself
// (a linearizable read, never a cache), and only to its owner: an agent
// asks before it creates or starts a VM (docs/ha.md, "Disk ownership"),
// so a host fenced and back never starts a VM HA restarted elsewhere.
func (s *Server) vmOwner(w http.ResponseWriter, r *http.Request, host string) error {
	project, name := r.PathValue("project"), r.PathValue("name")
	vm, err := s.repo.GetVM(r.Context(), project, name)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("VM %s/%s not found", project, name)
	}
	if err != nil {
		return err
	}
	o := model.DiskOwner{Host: vm.Status.Host}
	if vm.Status.Owner != nil {
		o = *vm.Status.Owner
	}
	if o.Host != host {
		return conflict("VM %s/%s is not assigned to host %s: its disks belong to another host", project, name, host)
	}
	writeJSON(w, http.StatusOK, o)
	return nil
}

// pollArgs reads a long poll's after=REV and wait=DURATION (at most 60s).
func pollArgs(r *http.Request) (int64, time.Duration, error) {
	q := r.URL.Query()
	var after int64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, fieldError("after", "must be a store revision, got %q", v)
		}
		after = n
	}
	wait := 30 * time.Second
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return 0, 0, fieldError("wait", "must be a duration like 30s, got %q", v)
		}
		wait = min(d, 60*time.Second)
	}
	return after, wait, nil
}

// pollStart readies the cache for a long poll: a first poll (after 0:
// an agent starting, or re-listing after an error) is answered with
// every write the store holds now; later ones wait in waitChange.
func (s *Server) pollStart(ctx context.Context, after int64) error {
	if after == 0 {
		_, err := s.view.consistent(ctx)
		return err
	}
	return s.view.c.WaitSynced(ctx)
}

// assignments answers the VMs assigned to the calling host, from the
// server's cache; with after=REV it waits (up to wait, at most 60s) until
// a VM or snapshot record of this host changed after REV. With
// delta=true it waits for a change other than the host's own status
// reports, and answers only what changed after REV (api.Assignments.Delta)
// when it can.
func (s *Server) assignments(w http.ResponseWriter, r *http.Request, host string) error {
	after, wait, err := pollArgs(r)
	if err != nil {
		return err
	}
	ctx, cancel := s.streamContext(r)
	defer cancel()
	if err := s.pollStart(ctx, after); err != nil {
		return err
	}
	delta := r.URL.Query().Get("delta") == "true"
	if after > 0 && wait > 0 {
		s.view.waitChange(ctx, "a/"+host, after, wait, delta)
	}
	var on hostVMs
	if delta {
		on = s.view.vmsOn(host, after)
	} else {
		on = s.view.vmsOn(host, 0)
	}
	snaps := s.view.snapshotsOn(host, on.keys)
	// The stored JSON is written as is: no decode, no re-encode.
	var buf bytes.Buffer
	buf.WriteString(`{"revision":`)
	buf.WriteString(strconv.FormatInt(on.rev, 10))
	buf.WriteString(`,"vms":[`)
	for i, raw := range on.vms {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(s.hostVMJSON(host, raw)) // its user data opened (userdata.go)
	}
	buf.WriteByte(']')
	if on.delta {
		buf.WriteString(`,"delta":true`)
		if len(on.removed) > 0 {
			b, err := json.Marshal(on.removed)
			if err != nil {
				return fmt.Errorf("server: encode removed VMs: %w", err)
			}
			buf.WriteString(`,"removed":`)
			buf.Write(b)
		}
	}
	if len(snaps) > 0 {
		b, err := json.Marshal(snaps)
		if err != nil {
			return fmt.Errorf("server: encode snapshots: %w", err)
		}
		buf.WriteString(`,"snapshots":`)
		buf.Write(b)
	}
	buf.WriteString("}\n")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
	return nil
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

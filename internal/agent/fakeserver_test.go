package agent_test

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/pki"
)

// fakeServer speaks the agent protocol over real mutual TLS, with the VMs
// of one host in memory. It applies reports the way the server does:
// phase, error, message and restart nonce; Gone removes the VM.
type fakeServer struct {
	t     *testing.T
	ca    *pki.CA
	srv   *httptest.Server
	token string

	mu  sync.Mutex
	rev int64
	// acted is the revision of the last change but the host's own status
	// reports (what a delta poll waits for); left, the VMs that left the
	// host and when (a delta names them), as the server keeps them.
	acted     int64
	left      map[string]int64
	vms       map[string]*model.VM // assigned to the host, by project/name
	elsewhere map[string]bool      // known, assigned to another host
	changed   chan struct{}
	beats     []api.Heartbeat
	reports   []api.VMReport
	joins     int
	// hbDown makes heartbeats fail (503); fenceMillis is the fence
	// timeout heartbeat answers carry (0: none).
	hbDown      bool
	fenceMillis int
	downBeats   int // heartbeats answered 503 while down
	// hbStall, when set, holds every heartbeat unanswered until it is
	// closed (a server whose store waits for a quorum).
	hbStall chan struct{}
	// hbDelay holds every heartbeat's answer that long; intervalMillis
	// is the interval answers carry (0: none)
	hbDelay        time.Duration
	intervalMillis int
	ownerAsks      int
	// offerCompact makes heartbeat answers offer the compact body (and
	// the server take it; else it answers 415 to one, as a server of
	// before the compact form does); ctypes are the beats' Content-Types.
	offerCompact bool
	ctypes       []string
	// noMigrationCerts answers the migration certificate route 404.
	noMigrationCerts bool
	// polls counts the GETs with a wait parameter, by path
	polls map[string]int
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA(now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCert(pki.DefaultServerNames(), now)
	if err != nil {
		t.Fatal(err)
	}
	return newFakeServerWith(t, ca, cert, nil)
}

// newFakeServerWith serves cert (from ca); TLS errors go to errLog.
func newFakeServerWith(t *testing.T, ca *pki.CA, cert tls.Certificate, errLog *log.Logger) *fakeServer {
	t.Helper()
	fs := &fakeServer{
		t: t, ca: ca, token: pki.FormatJoinToken(ca.Hash(), "s3cret"),
		vms: map[string]*model.VM{}, elsewhere: map[string]bool{}, changed: make(chan struct{}), rev: 1,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /agent/v1/join", fs.join)
	mux.HandleFunc("PUT /agent/v1/heartbeat", fs.mtls(fs.heartbeat))
	mux.HandleFunc("GET /agent/v1/assignments", fs.mtls(fs.assignments))
	mux.HandleFunc("PUT /agent/v1/vms/{project}/{name}/status", fs.mtls(fs.status))
	mux.HandleFunc("GET /agent/v1/vms/{project}/{name}/owner", fs.mtls(fs.owner))
	mux.HandleFunc("POST /agent/v1/migration-cert", fs.mtls(fs.migrationCert))
	fs.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Query().Has("wait") {
			fs.mu.Lock()
			if fs.polls == nil {
				fs.polls = map[string]int{}
			}
			fs.polls[r.URL.Path]++
			fs.mu.Unlock()
		}
		mux.ServeHTTP(w, r)
	}))
	fs.srv.Config.ErrorLog = errLog
	fs.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.Pool(),
	}
	fs.srv.StartTLS()
	t.Cleanup(fs.srv.Close)
	return fs
}

func (fs *fakeServer) URL() string { return fs.srv.URL }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (fs *fakeServer) mtls(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			writeJSON(w, 401, api.Error{Code: api.CodeUnauthorized, Message: "client certificate required"})
			return
		}
		h(w, r)
	}
}

func (fs *fakeServer) join(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+fs.token {
		writeJSON(w, 401, api.Error{Code: api.CodeUnauthorized, Message: "bad join token"})
		return
	}
	var req api.JoinRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, 400, api.Error{Code: api.CodeBadRequest, Message: err.Error()})
		return
	}
	cert, err := fs.ca.SignCSR([]byte(req.CSRPEM), req.Host, time.Hour, time.Now())
	if err != nil {
		writeJSON(w, 400, api.Error{Code: api.CodeBadRequest, Message: err.Error()})
		return
	}
	fs.mu.Lock()
	fs.joins++
	fs.mu.Unlock()
	writeJSON(w, 200, api.JoinResponse{CertPEM: string(cert), CAPEM: string(fs.ca.CertPEM)})
}

// migrationCert issues a migration certificate, as the server does; with
// noMigrationCerts it answers 404, as a server from before them.
func (fs *fakeServer) migrationCert(w http.ResponseWriter, r *http.Request) {
	fs.mu.Lock()
	old := fs.noMigrationCerts
	fs.mu.Unlock()
	if old {
		writeJSON(w, 404, api.Error{Code: api.CodeNotFound, Message: "no such route"})
		return
	}
	var req api.MigrationCertRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, 400, api.Error{Code: api.CodeBadRequest, Message: err.Error()})
		return
	}
	mc, err := fs.ca.IssueMigration([]byte(req.CSRPEM), r.TLS.PeerCertificates[0].Subject.CommonName, time.Hour, time.Now())
	if err != nil {
		writeJSON(w, 400, api.Error{Code: api.CodeBadRequest, Message: err.Error()})
		return
	}
	writeJSON(w, 200, api.MigrationCertResponse{CertPEM: string(mc.PEM), CAPEM: string(fs.ca.CertPEM), NotAfter: mc.NotAfter})
}

func (fs *fakeServer) heartbeat(w http.ResponseWriter, r *http.Request) {
	fs.mu.Lock()
	down, fence, stall, offer := fs.hbDown, fs.fenceMillis, fs.hbStall, fs.offerCompact
	delay, interval := fs.hbDelay, fs.intervalMillis
	ctype := r.Header.Get("Content-Type")
	fs.ctypes = append(fs.ctypes, ctype)
	fs.mu.Unlock()
	var hb api.Heartbeat
	var err error
	switch {
	case ctype == api.HeartbeatCompactType && !offer:
		writeJSON(w, 415, api.Error{Code: api.CodeBadRequest, Message: "unsupported Content-Type " + ctype})
		return
	case ctype == api.HeartbeatCompactType:
		b, _ := io.ReadAll(r.Body)
		hb, err = api.DecodeHeartbeatCompact(b)
	default:
		err = json.NewDecoder(r.Body).Decode(&hb)
	}
	if err != nil {
		writeJSON(w, 400, api.Error{Code: api.CodeBadRequest, Message: err.Error()})
		return
	}
	if stall != nil {
		select {
		case <-stall:
		case <-r.Context().Done():
			return
		}
	}
	fs.mu.Lock()
	if !down {
		fs.beats = append(fs.beats, hb)
	} else {
		fs.downBeats++
	}
	fs.mu.Unlock()
	if down {
		writeJSON(w, 503, api.Error{Code: api.CodeUnavailable, Message: "no store"})
		return
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	resp := api.HeartbeatResponse{IntervalSeconds: 0, LeaseTTLSeconds: 10, FenceMillis: fence, IntervalMillis: interval}
	if offer {
		resp.Accepts = []string{api.HeartbeatCompactType}
	}
	writeJSON(w, 200, resp)
}

// owner answers like the server: the VM's owner record, to its host only.
func (fs *fakeServer) owner(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("project") + "/" + r.PathValue("name")
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.ownerAsks++
	vm, ok := fs.vms[key]
	switch {
	case fs.elsewhere[key]:
		writeJSON(w, 409, api.Error{Code: api.CodeConflict, Message: "assigned to another host"})
	case !ok:
		writeJSON(w, 404, api.Error{Code: api.CodeNotFound, Message: "no such vm"})
	default:
		o := model.DiskOwner{Host: r.TLS.PeerCertificates[0].Subject.CommonName}
		if vm.Status.Owner != nil {
			o = *vm.Status.Owner
		}
		writeJSON(w, 200, o)
	}
}

// setHeartbeats makes heartbeats fail (down) or succeed, with a fence
// timeout.
func (fs *fakeServer) setHeartbeats(down bool, fenceMillis int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.hbDown, fs.fenceMillis = down, fenceMillis
}

// moveElsewhere makes a VM another host's (HA restarted it there) without
// telling this host's assignments.
func (fs *fakeServer) moveElsewhere(key string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.elsewhere[key] = true
}

// handOver is moveElsewhere once this host's assignment list has caught
// up: the VM leaves it too.
func (fs *fakeServer) handOver(key string) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.elsewhere[key] = true
	delete(fs.vms, key)
	fs.bumpLocked(nil)
	fs.leftLocked(key)
}

// leftLocked notes that key left the host at the current revision.
func (fs *fakeServer) leftLocked(key string) {
	if fs.left == nil {
		fs.left = map[string]int64{}
	}
	fs.left[key] = fs.rev
}

// answerLocked is an assignments answer: every VM, or with delta those
// changed after after and those that left since.
func (fs *fakeServer) answerLocked(after int64, delta bool) api.Assignments {
	out := api.Assignments{Revision: fs.rev, Delta: delta && after > 0}
	for _, v := range fs.vms {
		if !out.Delta || v.Revision > after {
			out.VMs = append(out.VMs, *v)
		}
	}
	for k, rev := range fs.left {
		if out.Delta && rev > after {
			out.Removed = append(out.Removed, k)
		}
	}
	return out
}

func (fs *fakeServer) assignments(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
	if err != nil || wait > 5*time.Second {
		wait = 5 * time.Second
	}
	delta := r.URL.Query().Get("delta") == "true"
	deadline := time.After(wait)
	for {
		fs.mu.Lock()
		if fs.rev > after && (!delta || fs.acted > after) {
			out := fs.answerLocked(after, delta)
			fs.mu.Unlock()
			writeJSON(w, 200, out)
			return
		}
		ch := fs.changed
		fs.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			fs.mu.Lock()
			out := fs.answerLocked(after, delta)
			fs.mu.Unlock()
			writeJSON(w, 200, out)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (fs *fakeServer) status(w http.ResponseWriter, r *http.Request) {
	var rep api.VMReport
	if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
		writeJSON(w, 400, api.Error{Code: api.CodeBadRequest, Message: err.Error()})
		return
	}
	key := r.PathValue("project") + "/" + r.PathValue("name")
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.reports = append(fs.reports, rep)
	if fs.elsewhere[key] {
		writeJSON(w, 409, api.Error{Code: api.CodeConflict, Message: "assigned to another host"})
		return
	}
	vm, ok := fs.vms[key]
	if !ok || (rep.UID != "" && vm.UID != rep.UID) {
		writeJSON(w, 404, api.Error{Code: api.CodeNotFound, Message: "no such vm"})
		return
	}
	if rep.Gone {
		delete(fs.vms, key)
	} else {
		vm.Status.Phase = rep.Phase
		vm.Status.LastError = rep.Error
		vm.Status.Message = rep.Message
		vm.Status.AppliedRestartNonce = rep.AppliedRestartNonce
		vm.Status.Usage = rep.Usage
		if rep.Disks != nil {
			vm.Status.Disks = rep.Disks // as the server keeps them
		}
		if rep.Watchdog != nil {
			vm.Status.Watchdog = rep.Watchdog
		}
	}
	if rep.Gone {
		fs.bumpLocked(vm)
		fs.leftLocked(key)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	fs.reportLocked(vm)
	writeJSON(w, 200, vm)
}

// reportLocked is bumpLocked for the host's own status report: it wakes
// only polls that do not ask for deltas.
func (fs *fakeServer) reportLocked(vm *model.VM) {
	acted := fs.acted
	fs.bumpLocked(vm)
	fs.acted = acted
}

func (fs *fakeServer) bumpLocked(vm *model.VM) {
	fs.rev++
	fs.acted = fs.rev
	if vm != nil {
		vm.Revision = fs.rev
	}
	close(fs.changed)
	fs.changed = make(chan struct{})
}

// put adds or replaces an assigned VM.
func (fs *fakeServer) put(vm model.VM) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if vm.UID == "" {
		vm.UID = "uid-" + vm.Name
	}
	v := vm
	fs.vms[vm.Key()] = &v
	delete(fs.left, vm.Key())
	fs.bumpLocked(&v)
}

// update changes an assigned VM's spec.
func (fs *fakeServer) update(key string, fn func(*model.VM)) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	vm := fs.vms[key]
	if vm == nil {
		fs.t.Fatalf("fake server: no vm %s", key)
	}
	fn(vm)
	fs.bumpLocked(vm)
}

func (fs *fakeServer) vm(key string) (model.VM, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	v, ok := fs.vms[key]
	if !ok {
		return model.VM{}, false
	}
	return *v, true
}

func (fs *fakeServer) lastBeat() (api.Heartbeat, int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if len(fs.beats) == 0 {
		return api.Heartbeat{}, 0
	}
	return fs.beats[len(fs.beats)-1], len(fs.beats)
}

func (fs *fakeServer) reportsFor(key string) []api.VMReport {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var out []api.VMReport
	for _, r := range fs.reports {
		if r.Project+"/"+r.Name == key {
			out = append(out, r)
		}
	}
	return out
}

// newVM is a VM builder for tests.
func newVM(name string) model.VM {
	return model.VM{
		Meta:   model.Meta{Name: name, Project: "default"},
		Spec:   model.VMSpec{VCPUs: 1, Memory: 256 * model.MiB, Disks: []model.Disk{{Name: "root", Size: model.GiB}}, Power: model.PowerRunning},
		Status: model.VMStatus{Phase: model.PhaseCreating, Host: "h1"},
	}
}

// eventually polls cond until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	eventuallyFor(t, what, 10*time.Second, cond, nil)
}

// eventuallyFor is eventually with a limit of its own; why, when set,
// adds what the test knows to the failure.
func eventuallyFor(t *testing.T, what string, limit time.Duration, cond func() bool, why func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			if why != nil {
				t.Fatalf("timed out waiting for %s (%s)", what, why())
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

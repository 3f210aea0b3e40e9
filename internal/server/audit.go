package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/auditlog"
	"github.com/vpool/vpool/internal/metrics"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// The audit trail's API side (docs/audit.md): every call of the user API
// that changes something (or tried to), and every console attach, is
// recorded by wrap() through auditRequest — who (token id, role, scopes,
// address), the route, the project and object, the outcome — from
// metadata only: no body, no query string and no error message reaches a
// record, so no secret can. The records go to the server's
// auditlog.Log, which appends them in batches (the request does not wait
// for the store). A request that changes something carries its record's
// intent (auditlog.Carrier): the repository's transactions made for it
// (auditlog.Carrying) write the intent beside the change, so that the
// record is in the store exactly when the change is; the appender links
// the final record and deletes the intent later.

// auditNote carries what a handler learns about the object of a request
// (the name in a create's body) to the audit record, and makes the
// request's intent for the store's transactions.
type auditNote struct {
	mu     sync.Mutex
	name   string
	create bool // a POST to a collection: the body names the object

	// for the intent (nil s: none)
	s      *Server
	r      *http.Request
	route  string
	e      endpoint
	p      **principal // wrap's: set once the request is authenticated
	at     time.Time
	intent string // the intent's key once made
	value  []byte
}

// Intent makes the request's intent the first time a transaction is
// made for it (auditlog.Carrier): its record as it stands, outcome "ok"
// (the transaction that carries it commits the change). Unauthenticated
// requests have none (they change nothing).
func (n *auditNote) Intent() (string, []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.s == nil || n.s.audit == nil || n.p == nil || *n.p == nil {
		return "", nil
	}
	if n.intent == "" {
		rec := n.s.apiRecord(n.r, n.route, n.e, *n.p, http.StatusOK, nil, n.name, n.at)
		rec.Status = 0 // not known yet
		k, v, err := n.s.audit.Intent(rec)
		if err != nil {
			n.s.log.Error("audit intent not made", "route", n.route, "err", err)
			return "", nil
		}
		n.intent, n.value = k, v
	}
	return n.intent, n.value
}

type auditNoteKey struct{}

// noteBody records the name a request body gives its object (readBody
// calls it for every body it reads). Only creates need it: their object
// is named in the body, not the path.
func noteBody(r *http.Request, body []byte) {
	n, _ := r.Context().Value(auditNoteKey{}).(*auditNote)
	if n == nil || !n.create || len(body) == 0 {
		return
	}
	vals := topLevelStrings(body, "name", "vm", "prefix")
	name := vals[0]
	if name == "" {
		name = vals[1]
	}
	if name == "" && vals[2] != "" {
		name = vals[2] + "*"
	}
	if name == "" || model.ValidName("name", strings.TrimSuffix(name, "*")) != nil {
		return // never a value the API refuses (it could be anything)
	}
	n.mu.Lock()
	n.name = name
	n.mu.Unlock()
}

// noteObject records the (validated) name of a request's object when
// only its handler knows it (a join names its host in the body).
func noteObject(r *http.Request, name string) {
	if n, _ := r.Context().Value(auditNoteKey{}).(*auditNote); n != nil {
		n.mu.Lock()
		n.name = name
		n.mu.Unlock()
	}
}

// auditJoin records a call of the agent listener that joins a host or a
// server: the object and the client's address, never the token. Refused
// joins are unauthenticated: rate-limited like the user API's.
func (s *Server) auditJoin(r *http.Request, route, kind string, code int, he *httpError, note *auditNote) {
	if s.audit == nil {
		return
	}
	if code >= 400 && !s.unauth.allow(s.now()) {
		s.auditSkipped.Add(1)
		return
	}
	rec := model.AuditRecord{Time: s.now(), Kind: model.AuditKindAPI, Action: route, Status: code, Outcome: "ok",
		Actor: &model.AuditActor{Source: r.RemoteAddr}, Object: kind}
	switch {
	case code >= 500:
		rec.Outcome = "failed"
	case code >= 400:
		rec.Outcome = "refused"
	}
	if he != nil {
		rec.Code = he.body.Code
		if he.body.Field != "" && len(he.body.Field) <= 128 {
			rec.Reason = "field " + he.body.Field
		}
	}
	note.mu.Lock()
	if note.name != "" {
		rec.Object += "/" + note.name
	}
	note.mu.Unlock()
	if err := s.audit.RecordWithin(rec, 10*time.Second); err != nil {
		s.log.Error("audit record dropped", "route", route, "err", err)
	}
}

// topLevelStrings returns the values of the given keys of a JSON object
// when they are plain strings at its top level ("" otherwise): a scan
// without decoding the body (a VM create's body is read once more by its
// handler; the audit record wants its name only).
func topLevelStrings(b []byte, keys ...string) []string {
	out := make([]string, len(keys))
	depth, i := 0, 0
	expectKey := false
	for i < len(b) {
		switch c := b[i]; c {
		case '{', '[':
			depth++
			expectKey = c == '{' && depth == 1
			i++
		case '}', ']':
			depth--
			i++
		case ',':
			expectKey = depth == 1
			i++
		case '"':
			str, next, escaped := scanString(b, i)
			i = next
			if depth != 1 || !expectKey {
				continue
			}
			expectKey = false
			for i < len(b) && (b[i] == ' ' || b[i] == ':' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
				i++
			}
			if escaped || i >= len(b) || b[i] != '"' {
				continue
			}
			val, next, vesc := scanString(b, i)
			i = next
			for k, key := range keys {
				if str == key && !vesc {
					out[k] = val
				}
			}
		default:
			i++
		}
	}
	return out
}

// scanString reads the JSON string starting at b[i] (a quote): its raw
// contents, the index after it, and whether it holds escapes.
func scanString(b []byte, i int) (string, int, bool) {
	escaped := false
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			escaped = true
			j++
		case '"':
			return string(b[i+1 : j]), j + 1, escaped
		}
	}
	return "", len(b), escaped
}

// auditable says whether a request to route is recorded: every method
// but reads, and console attaches.
func auditable(route string) bool {
	method, path, _ := strings.Cut(route, " ")
	return (method != http.MethodGet && method != http.MethodHead) || strings.HasSuffix(path, "/console")
}

// withAuditNote prepares r for auditRequest (or auditJoin).
func withAuditNote(r *http.Request, route string) (*http.Request, *auditNote) {
	n := &auditNote{create: strings.HasPrefix(route, "POST ") && !strings.Contains(route, "{")}
	return r.WithContext(context.WithValue(r.Context(), auditNoteKey{}, n)), n
}

// withAuditIntent is withAuditNote for the user API: with the trail on,
// r also carries its intent (p is wrap's principal, set later).
func (s *Server) withAuditIntent(r *http.Request, route string, e endpoint, p **principal, at time.Time) (*http.Request, *auditNote) {
	n := &auditNote{create: strings.HasPrefix(route, "POST ") && !strings.Contains(route, "{")}
	ctx := context.WithValue(r.Context(), auditNoteKey{}, n)
	if s.audit != nil && !e.public {
		ctx = auditlog.WithCarrier(ctx, n)
	}
	r = r.WithContext(ctx)
	if s.audit != nil && !e.public {
		n.s, n.r, n.route, n.e, n.p, n.at = s, r, route, e, p, at
	}
	return r, n
}

// auditRequest records one request. Unauthenticated ones are recorded
// at most unauthBurst at once and unauthRate per second (anyone can send
// them: they must not flood the trail).
func (s *Server) auditRequest(r *http.Request, route string, e endpoint, p *principal, code int, he *httpError, note *auditNote, at time.Time) {
	if s.audit == nil || e.public {
		return
	}
	if p == nil && !s.unauth.allow(s.now()) {
		s.auditSkipped.Add(1)
		return
	}
	note.mu.Lock()
	name, intent := note.name, note.intent
	note.s = nil // no intent after the record (a transaction the handler left running)
	note.mu.Unlock()
	if name == "" && r.Method == http.MethodPost && !strings.Contains(route, "{") && !strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
		// refused before the handler read the body: name the object anyway
		if b, err := peekBody(r); err == nil && len(b) <= MaxBody {
			noteBody(r, b)
			name = note.name
		}
	}
	rec := s.apiRecord(r, route, e, p, code, he, name, at)
	if err := s.audit.RecordCarried(rec, intent, 10*time.Second); err != nil {
		s.log.Error("audit record dropped", "route", route, "err", err)
	}
}

// apiRecord is the record of a request to route with outcome code.
func (s *Server) apiRecord(r *http.Request, route string, e endpoint, p *principal, code int, he *httpError, name string, at time.Time) model.AuditRecord {
	rec := model.AuditRecord{Time: at, Kind: model.AuditKindAPI, Action: route, Status: code,
		Actor: &model.AuditActor{Source: r.RemoteAddr}}
	switch {
	case code < 400:
		rec.Outcome = "ok"
	case code < 500:
		rec.Outcome = "refused"
	default:
		rec.Outcome = "failed"
	}
	if p != nil {
		rec.Actor.TokenID, rec.Actor.Role, rec.Actor.Project, rec.Actor.Scopes = p.tok.ID, p.tok.Role, p.tok.Project, p.tok.Scopes
	}
	if he != nil {
		rec.Code = he.body.Code
		if he.body.Field != "" && len(he.body.Field) <= 128 {
			rec.Reason = "field " + he.body.Field
		}
	}
	rec.Project = auditProject(r, e, p, name)
	rec.Object = auditObject(route, r, rec.Project, name)
	return rec
}

// auditProject is the project a request acted in: a scoped route's
// project, a project route's name. A token bound to a project that asked
// for another is recorded in its own (its members see its attempts; the
// other project's do not learn of the token).
func auditProject(r *http.Request, e endpoint, p *principal, name string) string {
	project := ""
	switch {
	case hasQuery(e, "project"):
		project = r.URL.Query().Get("project")
		if project == "" && p != nil {
			project = p.tok.Project
		}
		if project == "" {
			project = api.DefaultProject
		}
	case strings.HasPrefix(e.path, "/api/v1/projects/{name}"):
		project = r.PathValue("name")
	case e.path == "/api/v1/projects":
		project = name
	}
	if model.ValidName("project", project) != nil {
		project = ""
	}
	if p != nil && p.tok.Project != "" && project != p.tok.Project {
		project = p.tok.Project
	}
	return project
}

func hasQuery(e endpoint, q string) bool {
	for _, x := range e.query {
		if x == q {
			return true
		}
	}
	return false
}

// singular names the object kinds of the API's collections.
var singular = map[string]string{
	"vms": "vm", "vms:batch": "vm", "hosts": "host", "projects": "project", "tokens": "token", "images": "image",
	"networks": "network", "secgroups": "secgroup", "migrations": "migration", "cluster": "cluster", "balance": "balance",
	"lbs": "lb", "groups": "group",
}

// projectKinds live in a project: their object names carry it.
var projectKinds = map[string]bool{"vm": true, "network": true, "secgroup": true, "lb": true, "group": true}

// auditObject names what a request acted on from its route and path:
// vm/<project>/<name>[/snapshots/<snapshot>], host/<name>, token/<id>,
// cluster/policy; a create names the object its body names.
func auditObject(route string, r *http.Request, project, name string) string {
	_, path, _ := strings.Cut(route, " ")
	segs := strings.Split(strings.TrimPrefix(path, "/api/v1/"), "/")
	kind := singular[segs[0]]
	if kind == "" {
		kind = segs[0]
	}
	parts := []string{kind}
	if projectKinds[kind] && project != "" {
		parts = append(parts, project)
	}
	wild := strings.Contains(path, "{")
	for i, seg := range segs[1:] {
		switch {
		case strings.HasPrefix(seg, "{"):
			parts = append(parts, r.PathValue(strings.Trim(seg, "{}")))
		case !wild, i+2 < len(segs) && strings.HasPrefix(segs[i+2], "{"):
			parts = append(parts, seg)
		}
	}
	if !wild && name != "" && kind == "migration" && project != "" {
		return "vm/" + project + "/" + name // a migration is asked for a VM
	}
	if !wild && name != "" && (kind != "cluster" || path == "/api/v1/cluster/members") {
		parts = append(parts, name)
	}
	return strings.Join(parts, "/")
}

// limiter is a token bucket.
type limiter struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
	rate   float64
	burst  float64
}

func (l *limiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	} else {
		l.tokens = l.burst
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// Unauthenticated requests recorded: unauthRate per second, bursts of unauthBurst.
const (
	unauthRate  = 10
	unauthBurst = 100
)

// --- the audit API ---

func (s *Server) auditEndpoints() []endpoint {
	return []endpoint{
		{method: "GET", path: "/api/v1/audit", handle: s.listAudit, resp: api.AuditList{}, status: 200,
			query: []string{"project", "all-projects", "limit", "before", "after", "kind", "object"}},
		{method: "GET", path: "/api/v1/audit/records", handle: s.auditRecords, resp: api.AuditRecords{}, status: 200, query: []string{"from", "limit"}},
		{method: "GET", path: "/api/v1/audit/head", handle: s.auditHead, resp: api.AuditHeadView{}, status: 200},
		{method: "GET", path: "/api/v1/audit/key", handle: s.auditKey, resp: model.AuditKey{}, status: 200},
	}
}

// queryInt reads a non-negative integer query parameter (def when absent).
func queryInt(r *http.Request, name string, def, maxv int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > maxv {
		return 0, fieldError(name, "must be a whole number from 0 to %d (got %s)", maxv, quoteField(v))
	}
	return n, nil
}

// listAudit answers the newest records: a cluster admin's of every
// project (or ?project=), a tenant's of its own project only.
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request, p *principal) error {
	f := auditlog.Filter{Kind: r.URL.Query().Get("kind"), Object: r.URL.Query().Get("object")}
	if len(f.Object) > 256 || len(f.Kind) > 32 {
		return fieldError("object", "at most 256 bytes (kind: 32)")
	}
	if !p.clusterAdmin() || r.URL.Query().Get("project") != "" {
		project, err := s.scope(r, p, false)
		if err != nil {
			return err
		}
		f.Project = project
	}
	limit, err := queryInt(r, "limit", 100, api.MaxAuditList)
	if err != nil {
		return err
	}
	if f.Before, err = queryInt(r, "before", 0, 1<<62); err != nil {
		return err
	}
	if f.After, err = queryInt(r, "after", 0, 1<<62); err != nil {
		return err
	}
	if limit == 0 {
		limit = 100
	}
	recs, err := auditlog.Newest(r.Context(), s.cfg.Store, f, int(limit))
	if err != nil {
		return err
	}
	head, _, err := auditlog.ReadHead(r.Context(), s.cfg.Store)
	if err != nil {
		return err
	}
	if recs == nil {
		recs = []model.AuditRecord{}
	}
	reply(w, http.StatusOK, p, api.AuditList{Items: recs, Head: head.Seq})
	return nil
}

// auditRecords answers the stored bytes of records from ?from= on
// (admins: the chain holds every project's records).
func (s *Server) auditRecords(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	from, err := queryInt(r, "from", 1, 1<<62)
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit", api.MaxAuditRecords, api.MaxAuditRecords)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = api.MaxAuditRecords
	}
	head, _, err := auditlog.ReadHead(r.Context(), s.cfg.Store)
	if err != nil {
		return err
	}
	raws, err := auditlog.Range(r.Context(), s.cfg.Store, max(from, 1), head.Seq, int(limit))
	if err != nil {
		return err
	}
	out := api.AuditRecords{Records: make([]json.RawMessage, len(raws))}
	for i, raw := range raws {
		out.Records[i] = raw.Bytes
	}
	if n := len(raws); n > 0 && raws[n-1].Seq < head.Seq {
		out.Next = raws[n-1].Seq + 1
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// auditHead answers what a verifier needs besides the records.
func (s *Server) auditHead(w http.ResponseWriter, r *http.Request, p *principal) error {
	if err := requireAdmin(p); err != nil {
		return err
	}
	ctx := r.Context()
	head, _, err := auditlog.ReadHead(ctx, s.cfg.Store)
	if err != nil {
		return err
	}
	anchor, _, err := auditlog.ReadAnchor(ctx, s.cfg.Store)
	if err != nil {
		return err
	}
	key, err := auditlog.PublicKey(ctx, s.cfg.Store)
	if err != nil {
		return err
	}
	exported, err := auditlog.Exported(ctx, s.cfg.Store)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.AuditHeadView{Head: head, Anchor: anchor, Key: key, Exported: exported,
		MaxHeadAge: int(auditlog.DefaultMaxHeadAge / time.Second)})
	return nil
}

// auditKey publishes the servers' audit signing key (public: anyone
// who reads the trail may check it).
func (s *Server) auditKey(w http.ResponseWriter, r *http.Request, _ *principal) error {
	key, err := auditlog.PublicKey(r.Context(), s.cfg.Store)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, key)
	return nil
}

// openAudit loads (or creates) the servers' audit signing key, sealed
// with the CA seal key, and prepares the appender and the exporter.
func (s *Server) openAudit(ctx context.Context) error {
	seal, err := s.sealKey(false)
	if err != nil {
		return err
	}
	signer, err := auditlog.LoadOrCreateKey(ctx, s.cfg.Store, seal, s.now())
	if err != nil {
		return err
	}
	cfg := s.cfg.AuditLog
	cfg.Store, cfg.Signer, cfg.Server, cfg.Logger, cfg.Clock = s.cfg.Store, signer, s.cfg.Name, s.cfg.Logger, s.now
	if s.audit, err = auditlog.New(cfg); err != nil {
		return err
	}
	s.auditExport = auditlog.NewExporter(s.audit, auditlog.ExportConfig{Dir: s.cfg.AuditDir, Window: s.cfg.AuditWindow, Logger: s.cfg.Logger})
	if s.cfg.noAudit {
		s.audit = nil
		return nil
	}
	s.audit.Start()
	s.metrics.SetAudit(func() metrics.AuditStats {
		st := s.audit.Stats()
		return metrics.AuditStats{Written: st.Written, Batches: st.Batches, Conflicts: st.Conflicts, Dropped: st.Dropped, Queued: st.Queued}
	})
	return nil
}

// Audit is the server's audit appender: the controllers of this process
// record their decisions through it.
func (s *Server) Audit() *auditlog.Log { return s.audit }

// AuditTask exports and prunes the audit trail; the leader runs it
// (controller.Config.Tasks) with its term's store.
func (s *Server) AuditTask(ctx context.Context, st store.Store) error {
	return s.auditExport.Step(ctx, st)
}

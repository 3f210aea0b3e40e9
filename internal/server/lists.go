package server

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/watchcache"
)

// Lists are answered from the server's cache (view.go). A request asks
// for a page with limit=N and follows with the continue token of the
// previous answer; without limit the whole list is streamed. By default
// a list first waits until the cache holds every write the store had
// when the request came (one small linearizable read: read-your-writes
// across servers); consistent=false answers from the cache as it is;
// min-revision=R (a revision from an earlier answer, such as that of the
// client's last write) waits only until the cache applied R, with no
// read of the store: the answer holds every write up to R (the client's
// own), not necessarily later ones of others.
// Pages are not a snapshot at one revision: each page is the cache's
// state when it was read, keys never repeat across pages, and every item
// carries its own revision.

// listArgs are the paging parameters of a list request.
type listArgs struct {
	limit      int    // 0: everything
	after      string // the last key of the previous page
	minRev     int64  // the revision the previous page was read at
	consistent bool
}

// pageToken is what a continue token carries.
type pageToken struct {
	Key string `json:"k"`
	Rev int64  `json:"r"`
}

func encodeToken(key string, rev int64) string {
	b, _ := json.Marshal(pageToken{Key: key, Rev: rev})
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseListArgs reads limit, continue and consistent; prefix is the key
// range of the listing (a token of another listing is refused).
func parseListArgs(r *http.Request, prefix string) (listArgs, error) {
	q := r.URL.Query()
	a := listArgs{consistent: true}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > api.MaxPageLimit {
			return a, fieldError("limit", "must be between 1 and %d (got %s); leave it out for the whole list", api.MaxPageLimit, quoteField(v))
		}
		a.limit = n
	}
	if v := q.Get("consistent"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return a, fieldError("consistent", "must be true or false (got %s)", quoteField(v))
		}
		a.consistent = b
	}
	if v := q.Get("min-revision"); v != "" {
		n, err := parseMinRevision(v)
		if err != nil {
			return a, err
		}
		a.minRev = n
		if q.Get("consistent") == "" {
			a.consistent = false
		}
	}
	if v := q.Get("continue"); v != "" {
		raw, err := base64.RawURLEncoding.DecodeString(v)
		var t pageToken
		if err != nil || json.Unmarshal(raw, &t) != nil || t.Key == "" {
			return a, fieldError("continue", "is not a continue token of this server's lists; start again without it")
		}
		if !strings.HasPrefix(t.Key, prefix) {
			return a, fieldError("continue", "belongs to another listing (other project or kind); start again without it")
		}
		a.after, a.minRev, a.consistent = t.Key, max(a.minRev, t.Rev), false
	}
	return a, nil
}

// sync makes the cache as fresh as a asks: the store's revision now
// (consistent), or at least the revision of the previous page.
func (s *Server) sync(w http.ResponseWriter, r *http.Request, a listArgs) error {
	if a.consistent {
		_, t, err := s.view.consistentTimed(r.Context())
		t.header(w)
		return err
	}
	ctx := r.Context()
	if err := s.view.c.WaitSynced(ctx); err != nil {
		return err
	}
	if a.minRev > 0 {
		return s.view.atLeast(ctx, a.minRev)
	}
	return nil
}

// parseMinRevision reads min-revision.
func parseMinRevision(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return 0, fieldError("min-revision", "must be a revision from an earlier answer, a positive integer (got %s)", quoteField(v))
	}
	return n, nil
}

// page collects up to a.limit items of t under prefix after a.after (all
// of them without a limit); more says whether any is left.
func (v *view) page(t *watchcache.Table, prefix string, a listArgs) (items []*watchcache.Item, rev int64, more bool) {
	v.c.Read(func(at int64) {
		rev = at
		t.Each(prefix, a.after, func(it *watchcache.Item) bool {
			if a.limit > 0 && len(items) == a.limit {
				more = true
				return false
			}
			items = append(items, it)
			return true
		})
	})
	return items, rev, more
}

// listVMs answers VMs from the cache: a page with limit, else the whole
// list streamed in chunks. Items are the stored JSON as is.
func (s *Server) listVMs(w http.ResponseWriter, r *http.Request, p *principal) error {
	start := time.Now()
	project := ""
	if all, _ := strconv.ParseBool(r.URL.Query().Get("all-projects")); all {
		if err := requireAdmin(p); err != nil {
			return forbidden("all-projects needs an admin token")
		}
	} else {
		var err error
		if project, err = s.scope(r, p, false); err != nil {
			return err
		}
	}
	prefix := store.VMsPrefix
	if project != "" {
		prefix = store.VMProjectPrefix(project)
	}
	a, err := parseListArgs(r, prefix)
	if err != nil {
		return err
	}
	if err := s.sync(w, r, a); err != nil {
		return err
	}
	items, rev, more := s.view.page(s.view.vms, prefix, a)
	next := ""
	if more {
		next = encodeToken(items[len(items)-1].Key, rev)
	}
	// the handler's own time, the page written included, comes as a
	// Server-Timing trailer (the header, sent with the first bytes, has
	// the consistent read's): what a client's time has beyond it is
	// queueing and transfer
	w.Header().Set("Trailer", "Server-Timing")
	err = writeRawList(w, items, rev, next, !p.clusterAdmin())
	w.Header().Set("Server-Timing", "handler;dur="+strconv.FormatFloat(float64(time.Since(start).Microseconds())/1000, 'f', 3, 64))
	return err
}

// writeRawList writes {"items":[...],"revision":R[,"continue":T]} from
// stored VM JSON as it streams, through a pooled buffer flushed every
// 64 KiB: an item is its stored bytes with its revision spliced in front
// (state.AppendVMJSON), copied once, so that a page costs no allocation
// an item and a list of 100,000 VMs is never held in memory. For a
// tenant, a record that carries agent-reported text is decoded and
// redacted (tenantRawVMs); the others have nothing to redact.
func writeRawList(w http.ResponseWriter, items []*watchcache.Item, rev int64, next string, tenant bool) error {
	w.Header().Set("Content-Type", "application/json")
	bp := listBufs.Get().(*[]byte)
	buf := append((*bp)[:0], `{"items":[`...)
	defer func() {
		if cap(buf) <= 1<<20 {
			*bp = buf[:0]
			listBufs.Put(bp)
		}
	}()
	failed := false
	flush := func() {
		if !failed {
			if _, err := w.Write(buf); err != nil {
				failed = true // the client went away
			}
		}
		buf = buf[:0]
	}
	for i, it := range items {
		if i > 0 {
			buf = append(buf, ',')
		}
		val := stripRawUserData(it.Value) // write-only (userdata.go)
		if tenant && needsRedaction(val) {
			raws, err := tenantRawVMs([]json.RawMessage{state.VMJSON(val, it.ModRev)})
			if err != nil {
				return err
			}
			buf = append(buf, raws[0]...)
		} else {
			buf = state.AppendVMJSON(buf, val, it.ModRev)
		}
		if len(buf) >= 64<<10 {
			flush()
		}
	}
	buf = append(buf, `],"revision":`...)
	buf = strconv.AppendInt(buf, rev, 10)
	if next != "" {
		buf = append(buf, `,"continue":"`...)
		buf = append(buf, next...)
		buf = append(buf, '"')
	}
	buf = append(buf, "}\n"...)
	flush()
	return nil
}

// listBufs are the buffers pages are written through.
var listBufs = sync.Pool{New: func() any { b := make([]byte, 0, 80<<10); return &b }}

package server

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// principal is the authenticated caller of a user API request.
type principal struct {
	tok *model.Token
}

// clusterAdmin can do everything everywhere.
func (p *principal) clusterAdmin() bool {
	return p.tok.Role == model.RoleAdmin && p.tok.Project == ""
}

// canWrite is false for viewers.
func (p *principal) canWrite() bool { return p.tok.Role != model.RoleViewer }

func unauthorized(msg string) *httpError {
	return errf(http.StatusUnauthorized, api.CodeUnauthorized, "", "%s", msg)
}

// authenticate resolves the bearer token of r.
func (s *Server) authenticate(r *http.Request) (*principal, *httpError) {
	h := r.Header.Get("Authorization")
	secret, ok := strings.CutPrefix(h, "Bearer ")
	if !ok && h == "" {
		secret, ok = websocketBearer(r)
	}
	secret = strings.TrimSpace(secret)
	if !ok || secret == "" {
		return nil, unauthorized("missing bearer token: send the header Authorization: Bearer <token> (the admin token is in DATA_DIR/admin.token)")
	}
	tok, err := s.tokenByHash(r.Context(), state.HashSecret(secret))
	if errors.Is(err, store.ErrNotFound) {
		return nil, unauthorized("invalid token")
	}
	if err != nil {
		return nil, toHTTP(err)
	}
	if tok.Purpose == "join" || tok.Role == model.RoleAgent {
		return nil, unauthorized("this is a host join token; it is only valid for `vpool agent --join`")
	}
	if !tok.ExpiresAt.IsZero() && s.now().After(tok.ExpiresAt) {
		return nil, unauthorized("token expired at " + tok.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z"))
	}
	return &principal{tok: tok}, nil
}

// knownBearer reports whether r's bearer token is in the server's view:
// while an address is over its failed authentications, such a request
// still goes through (a tenant behind the same address as a token
// sprayer is not locked out), and any other is refused before it costs
// a store read.
func (s *Server) knownBearer(r *http.Request) bool {
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		secret, ok = websocketBearer(r)
	}
	secret = strings.TrimSpace(secret)
	if !ok || secret == "" {
		return false
	}
	_, known := s.view.token(state.HashSecret(secret))
	return known
}

// tokenByHash returns the token stored under hash: from the server's
// watch-fed view when it holds it (no store round trip per request),
// else from the store (the view may lag behind a token just created on
// another server). A revoked token leaves the view with the watch event
// of its deletion; the server that revoked it waits for that event
// before answering (deleteToken), so its own next request is refused.
func (s *Server) tokenByHash(ctx context.Context, hash string) (*model.Token, error) {
	if tok, ok := s.view.token(hash); ok {
		return tok, nil
	}
	return s.repo.TokenByHash(ctx, hash)
}

// WebSocketBearerPrefix marks a websocket subprotocol that carries the
// bearer token (base64url, no padding): a browser's WebSocket cannot send
// an Authorization header, and a token in the URL would end up in logs
// and history (the dashboard's console offers "vpool.console" and this).
const WebSocketBearerPrefix = "vpool.bearer."

// websocketBearer reads the token of a websocket upgrade from its
// subprotocols.
func websocketBearer(r *http.Request) (string, bool) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return "", false
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if enc, ok := strings.CutPrefix(strings.TrimSpace(p), WebSocketBearerPrefix); ok {
				b, err := base64.RawURLEncoding.DecodeString(enc)
				return string(b), err == nil
			}
		}
	}
	return "", false
}

// requireAdmin refuses everyone but cluster admins.
func requireAdmin(p *principal) error {
	if !p.clusterAdmin() {
		return forbidden("this needs an admin token")
	}
	return nil
}

// scope returns the project a project-scoped request works in:
// ?project=, else the token's project, else "default". A token bound to
// one project asking for another gets 404 (its existence is not
// revealed); a viewer asking to write gets 403.
func (s *Server) scope(r *http.Request, p *principal, write bool) (string, error) {
	q := r.URL.Query().Get("project")
	if q != "" && model.ValidName("project", q) != nil {
		return "", notFound("project %s not found", quoteField(q))
	}
	project := q
	if bound := p.tok.Project; bound != "" {
		if q != "" && q != bound {
			return "", notFound("project %q not found", q)
		}
		project = bound
	} else if !p.clusterAdmin() {
		return "", forbidden("this token is bound to no project")
	}
	if project == "" {
		project = api.DefaultProject
	}
	if write && !p.canWrite() {
		return "", forbidden("a viewer token cannot change anything")
	}
	return project, nil
}

// seesProject says whether p may see project name (404 otherwise).
func seesProject(p *principal, name string) bool {
	return p.clusterAdmin() || p.tok.Project == name
}

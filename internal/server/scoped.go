package server

import (
	"context"
	"errors"
	"net/http"

	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

// The read handlers of project-scoped kinds (load balancers, scaling
// groups, networks, security groups) are one shape: resolve the
// project the caller may read, ask the repository, map "not found" to a
// 404 that names the kind, the name and the project, answer through
// reply (tenants get forTenant's redaction).

// handler is an endpoint's handler.
type handler = func(w http.ResponseWriter, r *http.Request, p *principal) error

// missing maps store.ErrNotFound to the 404 of a kind ("load balancer").
func missing(kind string) func(err error, project, name string) error {
	return func(err error, project, name string) error {
		if errors.Is(err, store.ErrNotFound) {
			return notFound("%s %q not found in project %s", kind, truncateStr(name, 80), project)
		}
		return err
	}
}

// scopedList answers GET of the project's objects of one kind, wrapped
// in the kind's list body.
func scopedList[T, L any](s *Server, list func(*state.Repo, context.Context, string) ([]*T, error), wrap func([]T) L) handler {
	return func(w http.ResponseWriter, r *http.Request, p *principal) error {
		project, err := s.scope(r, p, false)
		if err != nil {
			return err
		}
		xs, err := list(s.repo, r.Context(), project)
		if err != nil {
			return err
		}
		out := make([]T, 0, len(xs))
		for _, x := range xs {
			out = append(out, *x)
		}
		reply(w, http.StatusOK, p, wrap(out))
		return nil
	}
}

// scopedGet answers GET of one object by the {name} in the path.
func scopedGet[T any](s *Server, get func(*state.Repo, context.Context, string, string) (*T, error), notFound func(error, string, string) error) handler {
	return func(w http.ResponseWriter, r *http.Request, p *principal) error {
		project, err := s.scope(r, p, false)
		if err != nil {
			return err
		}
		name := r.PathValue("name")
		x, err := get(s.repo, r.Context(), project, name)
		if err != nil {
			return notFound(err, project, name)
		}
		reply(w, http.StatusOK, p, x)
		return nil
	}
}

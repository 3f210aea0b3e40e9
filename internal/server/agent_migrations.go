package server

import (
	"errors"
	"net/http"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/state"
	"github.com/vpool/vpool/internal/store"
)

func (s *Server) agentMigrationEndpoints() []agentEndpoint {
	return []agentEndpoint{
		{method: "GET", path: "/agent/v1/migrations", handle: s.agentMigrations, needCert: true, resp: api.AgentMigrations{}, status: 200, query: []string{"after", "wait"}},
		{method: "PUT", path: "/agent/v1/migrations/{id}/report", handle: s.migrationReport, needCert: true, req: api.MigrationReport{}, resp: model.Migration{}, status: 200},
	}
}

// needsHost says whether host still has something to do in m: every
// unfinished migration it takes part in, and a finished one whose copy on
// its side is not confirmed gone (the source after completion, the target
// after a failure or cancellation).
func needsHost(m *model.Migration, host string) bool {
	switch {
	case !state.MigrationInvolves(m, host):
		return false
	case !m.Phase.Final():
		return true
	case m.Phase == model.MigrationCompleted:
		return host == m.Source && !m.SourceCleaned
	}
	return host == m.Target && !m.TargetCleaned
}

// agentMigrations answers the migrations the calling host takes part in;
// with after=REV it waits (up to wait, at most 60s) for one of them to
// change after REV.
func (s *Server) agentMigrations(w http.ResponseWriter, r *http.Request, host string) error {
	after, wait, err := pollArgs(r)
	if err != nil {
		return err
	}
	ctx, cancel := s.streamContext(r)
	defer cancel()
	if err := s.pollStart(ctx, after); err != nil {
		return err
	}
	if after > 0 && wait > 0 {
		s.view.waitChange(ctx, "m/"+host, after, wait, false)
	}
	items, rev := s.view.migrationsFor(host)
	for i := range items {
		s.migrationForHost(host, &items[i])
	}
	writeJSON(w, http.StatusOK, api.AgentMigrations{Revision: rev, Items: items})
	return nil
}

// migrationForHost makes m (a copy) what host may see of its spec: the
// target of a migration under way gets the VM's user data in clear (it
// builds the VM's seed); the source runs the VM already, and needs none.
func (s *Server) migrationForHost(host string, m *model.Migration) {
	if host != m.Target || m.Phase.Final() {
		publicSpec(&m.Spec)
		return
	}
	if err := s.openForHost(m.Project, &m.Spec); err != nil {
		s.log.Error("the VM's user data does not open: the migration's target gets it sealed and will refuse it", "migration", m.Name, "vm", m.VMKey(), "host", host, "err", err)
	}
}

// migrationReport records what an agent says about its side of a
// migration. Only facts are stored here; the migration controller (on
// the leader) acts on them.
func (s *Server) migrationReport(w http.ResponseWriter, r *http.Request, host string) error {
	var rep api.MigrationReport
	if he := decodeJSON(w, r, &rep); he != nil {
		return he
	}
	id := r.PathValue("id")
	now := s.now()
	m, err := s.repo.UpdateMigration(r.Context(), id, func(m *model.Migration) error {
		switch host {
		case m.Target:
			return applyTargetReport(m, rep)
		case m.Source:
			return applySourceReport(m, rep, now)
		}
		return forbidden("host %s takes no part in migration %s", host, m.Name)
	})
	if errors.Is(err, store.ErrNotFound) {
		return notFound("migration %q not found", id)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, withoutUserData(m))
	return nil
}

func applyTargetReport(m *model.Migration, rep api.MigrationReport) error {
	if rep.Progress != nil || rep.Result != nil || rep.SourceError != "" || rep.SourceGone || rep.Unsure {
		return badRequest("the target of migration %s reported source fields", m.Name)
	}
	changed := false
	if rep.Addr != "" && m.TargetAddr == "" && m.Phase == model.MigrationPreparingTarget {
		m.TargetAddr, changed = rep.Addr, true
	}
	if rep.TargetError != "" && m.TargetError == "" && !m.Phase.Final() {
		m.TargetError, changed = rep.TargetError, true
	}
	if rep.Arrived && !m.Arrived {
		m.Arrived, changed = true, true
	}
	if rep.Absent && (m.SourceUnsure || m.SourceGone) && !m.Arrived && !m.TargetAbsent {
		m.TargetAbsent, changed = true, true
	}
	if rep.Cleaned && m.Phase.Final() && !m.TargetCleaned {
		m.TargetCleaned, changed = true, true
	}
	if !changed {
		return state.ErrSkip
	}
	return nil
}

func applySourceReport(m *model.Migration, rep api.MigrationReport, now time.Time) error {
	if rep.Addr != "" || rep.TargetError != "" || rep.Arrived || rep.Absent {
		return badRequest("the source of migration %s reported target fields", m.Name)
	}
	changed := false
	transferring := m.Phase == model.MigrationTransferring
	if rep.Progress != nil && transferring && !m.SourceDone {
		m.Progress = *rep.Progress
		m.Progress.UpdatedAt = now
		changed = true
	}
	if rep.Result != nil && transferring && !m.SourceDone && m.SourceError == "" {
		res := *rep.Result
		m.Result, m.SourceDone, changed = &res, true, true
		m.Progress.BytesLeft, m.Progress.ETASeconds, m.Progress.UpdatedAt = 0, 0, now
		if res.BytesSent > 0 {
			m.Progress.BytesSent = res.BytesSent
		}
	}
	if rep.SourceError != "" && transferring && !m.SourceDone && m.SourceError == "" {
		m.SourceError, m.SourceUnsure, changed = rep.SourceError, rep.Unsure, true
	}
	if rep.SourceGone && transferring && !m.SourceGone {
		m.SourceGone, changed = true, true
	}
	if rep.Cleaned && m.Phase.Final() && !m.SourceCleaned {
		m.SourceCleaned, changed = true, true
	}
	if !changed {
		return state.ErrSkip
	}
	return nil
}

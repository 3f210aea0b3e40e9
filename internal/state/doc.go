// Package state is the typed repository over store.Store that the HTTP
// server and the controllers share. It encodes model objects as JSON at the
// keys of internal/store (with Meta.Revision = the key's ModRev), and it
// owns the multi-key invariants that must change in one transaction:
//
//   - quota admission: a VM (or a batch) is created in one transaction that
//     also bumps the project's usage key, guarded on the revision of the
//     usage key that was read, so concurrent creates never over-admit;
//   - host allocations: when a VM is assigned to a host, moved, resized or
//     deleted, the host's model.Allocation changes in the same transaction
//     (AllocAdd / AllocRelease are the one definition of what a VM holds);
//   - events: every VM phase transition and host state transition writes a
//     model.Event in the same transaction as the change (TransitionOps).
//
// Writers use compare-and-swap loops (UpdateVM, UpdateHost,
// UpdateAllocation ...): read, apply a function, write guarded on the read
// revision, and retry on conflict. A mutate function may return ErrSkip to
// write nothing.
//
// # Leadership fence
//
// The controllers write only through a Repo obtained with Term for their
// leadership term: every transaction it issues (typed methods, Txn, and
// the store its Store method returns) also requires the term's leader key
// at the revision the term wrote it, and fails with ErrNotLeader once
// another server leads. The API server's Repo (New) carries no fence.
//
// # VM phases
//
// The phases and who moves a VM between them:
//
//	(create)   → pending      API admission (event vm.created)
//	pending    → scheduling   scheduler picked it up
//	scheduling → creating     scheduler stored an assignment (Status.Host)
//	pending    → creating     (same, when the scheduler skips scheduling)
//	scheduling → pending      no host fits; retried later (Status.LastError)
//	creating   → running      agent: the VM runs on its host
//	creating   → stopped      agent: created with Spec.Power = stopped
//	running    → stopping     API stop (Spec.Power = stopped)
//	stopping   → stopped      agent: the VM is off
//	stopped    → running      agent, after API start (Spec.Power = running)
//	running    ⇄ paused       agent (pause/resume)
//	any        → failed       agent or controller: something broke (LastError)
//	failed     → pending      controller (HA) releases it to be placed again
//	any        → deleting     API delete of an assigned VM (Meta.DeletedAt set)
//	deleting   → (gone)       agent reports Gone → FinishDeleteVM
//	unassigned → (gone)       API delete of a VM with no host → FinishDeleteVM
//
// Each arrow writes an event of kind "vm.phase" (From/To set); creation
// writes "vm.created" and removal "vm.deleted". Host state changes write
// "host.joined", "host.up", "host.down" or "host.<state>".
//
// This package imports internal/store and internal/model only; it must not
// import net/http, etcd or any server, agent or controller code.
package state

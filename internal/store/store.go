// Package store defines the key-value Store that holds all of vpool's state
// (get, list, compare-and-swap transactions, watches, leases) and the key
// layout. Implementations live in etcdstore (the only importer of etcd) and
// memstore (in memory, for unit tests and simulation); one contract suite in
// storetest runs against both. This package imports only the standard
// library and internal/model.
package store

import (
	"context"
	"errors"
)

// Sentinel errors. Implementations wrap them so callers use errors.Is.
var (
	ErrNotFound  = errors.New("store: key not found")
	ErrConflict  = errors.New("store: transaction conflict")
	ErrClosed    = errors.New("store: closed")
	ErrNoLease   = errors.New("store: lease not found")
	ErrCompacted = errors.New("store: revision compacted")
	// ErrUnavailable is a store that could not answer: no leader, a
	// leader change or a timeout inside the store. For a write the
	// outcome is unknown: it may have been applied. Callers read back
	// before they retry anything that is not idempotent.
	ErrUnavailable = errors.New("store: unavailable")
)

// KV is one stored key with its value and revisions.
type KV struct {
	Key       string
	Value     []byte
	CreateRev int64 // revision at which the key was created
	ModRev    int64 // revision of the last write to the key
	Lease     LeaseID
}

// LeaseID identifies a lease; keys attached to it vanish when it expires.
type LeaseID int64

// CondKind is what a Cond compares.
type CondKind int

// Condition kinds.
const (
	// ModRevEquals holds when the key's ModRev equals Rev; Rev 0 means the
	// key must not exist.
	ModRevEquals CondKind = iota
	// Exists holds when the key exists.
	Exists
	// Absent holds when the key does not exist.
	Absent
)

// Cond is one guard of a transaction.
type Cond struct {
	Key  string
	Kind CondKind
	Rev  int64
}

// IfRev guards on the key's ModRev (0 = must be absent).
func IfRev(key string, rev int64) Cond { return Cond{Key: key, Kind: ModRevEquals, Rev: rev} }

// IfAbsent guards on the key not existing.
func IfAbsent(key string) Cond { return Cond{Key: key, Kind: Absent} }

// IfExists guards on the key existing.
func IfExists(key string) Cond { return Cond{Key: key, Kind: Exists} }

// OpKind is a write.
type OpKind int

// Operation kinds.
const (
	OpPut OpKind = iota
	OpDelete
)

// Op is one write of a transaction.
type Op struct {
	Kind  OpKind
	Key   string
	Value []byte
	Lease LeaseID
}

// Put writes value at key.
func Put(key string, value []byte) Op { return Op{Kind: OpPut, Key: key, Value: value} }

// PutWithLease writes value at key, attached to a lease.
func PutWithLease(key string, value []byte, l LeaseID) Op {
	return Op{Kind: OpPut, Key: key, Value: value, Lease: l}
}

// Delete removes key.
func Delete(key string) Op { return Op{Kind: OpDelete, Key: key} }

// EventType says what happened to a key.
type EventType int

// Watch event types.
const (
	EventPut EventType = iota
	EventDelete
)

// WatchEvent is one change seen by a watch. For deletes, KV.Value is the
// value before deletion when the implementation has it (may be nil).
type WatchEvent struct {
	Type EventType
	KV   KV
	Rev  int64
}

// WatchResponse is a batch of events, or a terminal error.
type WatchResponse struct {
	Events []WatchEvent
	Err    error
}

// Store is the whole of vpool's persistent state.
type Store interface {
	// Get returns the key or ErrNotFound.
	Get(ctx context.Context, key string) (KV, error)
	// List returns every key with the prefix, in key order, and the store
	// revision the listing was read at.
	List(ctx context.Context, prefix string) ([]KV, int64, error)
	// Txn applies ops atomically if every cond holds. It returns whether
	// the conds held and the revision after the write (or the current one).
	Txn(ctx context.Context, conds []Cond, ops []Op) (ok bool, rev int64, err error)
	// Watch streams changes under prefix from revision fromRev (0 = now).
	// The channel closes when ctx ends; a terminal error comes as the last
	// response (ErrCompacted when fromRev is gone).
	Watch(ctx context.Context, prefix string, fromRev int64) <-chan WatchResponse
	// Grant creates a lease that expires ttlSeconds after its last keep-alive.
	Grant(ctx context.Context, ttlSeconds int64) (LeaseID, error)
	// KeepAlive renews a lease once; ErrNoLease when it has expired.
	KeepAlive(ctx context.Context, id LeaseID) error
	// Revoke ends a lease now, deleting its keys.
	Revoke(ctx context.Context, id LeaseID) error
	// Close releases the store.
	Close() error
}

// RevisionReader is a Store that can read its current revision without
// a range read. Revision is linearizable: it is at least the revision of
// every write acknowledged before the call. Optional: callers fall back
// to a List of one key, whose revision means the same.
type RevisionReader interface {
	Revision(ctx context.Context) (int64, error)
}

// AppliedReader is a Store that can read a key as of some revision at
// least atLeast (not necessarily the latest) more cheaply than Get: an
// embedded member answers from its applied state in process, with no
// read index, no gRPC and no TLS, once it has applied atLeast. It is
// for reads that follow a write the caller already saw (a VM's
// explanation, written with a version of the VM at or before the one
// the caller holds). Optional: callers fall back to Get.
type AppliedReader interface {
	GetApplied(ctx context.Context, key string, atLeast int64) (KV, error)
}

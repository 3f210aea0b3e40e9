package scheduler

import "errors"

// Sentinel errors; test with errors.Is. "Does not fit" is not an error: it
// is a Decision without a host, with an explanation.
var (
	ErrDuplicateHost  = errors.New("scheduler: duplicate host")
	ErrUnknownHost    = errors.New("scheduler: unknown host")
	ErrUnknownPlugin  = errors.New("scheduler: unknown plugin")
	ErrBadPolicy      = errors.New("scheduler: bad policy")
	ErrBadRequest     = errors.New("scheduler: bad request")
	ErrNotPlaced      = errors.New("scheduler: decision has no host")
	ErrAlreadyAssumed = errors.New("scheduler: vm already assumed")
	ErrNotAssumed     = errors.New("scheduler: vm not assumed")
	ErrPlugin         = errors.New("scheduler: plugin failed")
)

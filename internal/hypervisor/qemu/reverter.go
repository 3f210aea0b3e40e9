package qemu

// reverter undoes half-done work: steps are pushed as they succeed and,
// unless success is declared, run in reverse order. Usage:
//
//	rev := &reverter{}
//	defer rev.fail()
//	... rev.add(undo) after each step ...
//	rev.success()
type reverter struct {
	undo []func()
	done bool
}

func (r *reverter) add(f func()) { r.undo = append(r.undo, f) }

// success keeps everything: fail becomes a no-op.
func (r *reverter) success() { r.done = true }

// fail runs the undo steps, newest first, unless success was called.
func (r *reverter) fail() {
	if r.done {
		return
	}
	for i := len(r.undo) - 1; i >= 0; i-- {
		r.undo[i]()
	}
	r.undo = nil
}

package testenv

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetns runs fn on a thread that sits in the named network namespace
// (/run/netns/NAME, made by `ip netns add`); sockets fn makes stay in it.
// The thread returns to its own namespace afterwards; if it cannot, it
// is left locked, so it dies with its goroutine instead of serving others
// from the wrong namespace.
func InNetns(ns string, fn func() error) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("testenv: entering netns %s: %w", ns, err)
	}
	ferr := fn()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		panic(fmt.Sprintf("testenv: restoring the network namespace: %v", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

package state

import (
	"fmt"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// Event kinds of VM changes other than phases, and of snapshots.
const (
	EventVMStartAsked    = "vm.start"
	EventVMStopAsked     = "vm.stop"
	EventVMRestartAsked  = "vm.restart"
	EventVMRestarted     = "vm.restarted"
	EventVMResize        = "vm.resize"
	EventVMResized       = "vm.resized"
	EventVMResizeRefused = "vm.resize-refused"
	EventVMDiskAdded     = "vm.disk-added"
	EventVMDiskRemoved   = "vm.disk-removed"
	EventVMDiskResize    = "vm.disk-resize"
	EventVMDiskResized   = "vm.disk-resized"
	EventVMDeleting      = "vm.deleting"
	EventVMWatchdog      = "vm.watchdog"
	EventSnapshotReady   = "snapshot.ready"
	EventSnapshotFailed  = "snapshot.failed"
	EventSnapshotRevert  = "snapshot.revert"
	EventSnapshotReverts = "snapshot.reverted"
	EventSnapshotDelete  = "snapshot.deleting"
	EventSnapshotDeleted = "snapshot.deleted"
)

// changeOps records what changed between old and new beside the phase:
// power requests (with how a stop ends), restarts asked for and done,
// resizes asked for and their outcome, disks added, removed or grown,
// and deletion asked for. Every write of a VM goes through UpdateVM, so
// no such change goes unrecorded.
func changeOps(old, nv *model.VM, now time.Time) []store.Op {
	var ops []store.Op
	add := func(kind, format string, args ...any) {
		ops = append(ops, EventOp(model.Event{Time: now, Kind: kind, Object: VMObject(nv.Project, nv.Name), Project: nv.Project,
			Message: fmt.Sprintf("VM %s: ", nv.Name) + fmt.Sprintf(format, args...)}))
	}
	so, sn := &old.Spec, &nv.Spec
	if old.DeletedAt == nil && nv.DeletedAt != nil {
		add(EventVMDeleting, "deletion asked for")
	}
	switch {
	case so.Power != sn.Power && sn.Power == model.PowerRunning:
		add(EventVMStartAsked, "start asked for")
	case so.Power != sn.Power && sn.Power == model.PowerStopped:
		add(EventVMStopAsked, "stop asked for (%s)", stopHow(sn))
	case sn.Power == model.PowerStopped && sn.StopForce && !so.StopForce:
		add(EventVMStopAsked, "stop asked for again (%s)", stopHow(sn))
	}
	if sn.RestartNonce != so.RestartNonce {
		add(EventVMRestartAsked, "restart asked for")
	}
	if nv.Status.AppliedRestartNonce > old.Status.AppliedRestartNonce {
		add(EventVMRestarted, "restarted on %s", nv.Status.Host)
	}
	if w := nv.Status.Watchdog; w != nil && (old.Status.Watchdog == nil || w.At.After(old.Status.Watchdog.At)) {
		add(EventVMWatchdog, "the guest watchdog fired on %s (action %s; %s in this run)", nv.Status.Host, w.Action, times(w.Count))
	}
	resizeOps(old, nv, add)
	diskOps(so.Disks, sn.Disks, add)
	if nv.Status.Disks != nil {
		for _, d := range nv.Status.Disks {
			if was := diskSize(old.Status.Disks, d.Name); was != 0 && d.Size > was {
				add(EventVMDiskResized, "disk %s grew from %s to %s on %s", d.Name, was, d.Size, nv.Status.Host)
			}
		}
	}
	return ops
}

// times says how many times something happened ("once", "3 times").
func times(n int) string {
	if n == 1 {
		return "once"
	}
	return fmt.Sprintf("%d times", n)
}

func stopHow(s *model.VMSpec) string {
	switch {
	case s.StopForce:
		return "forced: the plug is pulled"
	case s.StopTimeout > 0:
		return fmt.Sprintf("the guest gets %ds to power off", s.StopTimeout)
	}
	return "the guest is asked to power off"
}

func resizeOps(old, nv *model.VM, add func(kind, format string, args ...any)) {
	so, sn := &old.Spec, &nv.Spec
	if so.VCPUs != sn.VCPUs || so.Memory != sn.Memory {
		add(EventVMResize, "resize from %d vCPUs / %s to %d vCPUs / %s", so.VCPUs, so.Memory, sn.VCPUs, sn.Memory)
	}
	o, n := old.Status.Resize, nv.Status.Resize
	if n != nil && o != nil && o.ID == n.ID && o.Phase == model.ResizePending {
		switch n.Phase {
		case model.ResizeDone:
			add(EventVMResized, "resized to %d vCPUs / %s", n.VCPUs, n.Memory)
		case model.ResizeRefused:
			add(EventVMResizeRefused, "resize to %d vCPUs / %s refused: %s", n.VCPUs, n.Memory, n.Message)
		}
	}
}

func diskOps(old, nv []model.Disk, add func(kind, format string, args ...any)) {
	for _, d := range nv {
		switch was := specDisk(old, d.Name); {
		case was == nil:
			add(EventVMDiskAdded, "disk %s (%s) added", d.Name, d.Size)
		case d.Size > was.Size:
			add(EventVMDiskResize, "disk %s to grow from %s to %s", d.Name, was.Size, d.Size)
		}
	}
	for _, d := range old {
		if specDisk(nv, d.Name) == nil {
			add(EventVMDiskRemoved, "disk %s removed", d.Name)
		}
	}
}

func specDisk(ds []model.Disk, name string) *model.Disk {
	for i := range ds {
		if ds[i].Name == name {
			return &ds[i]
		}
	}
	return nil
}

func diskSize(ds []model.DiskStatus, name string) model.Bytes {
	for _, d := range ds {
		if d.Name == name {
			return d.Size
		}
	}
	return 0
}

// snapshotOps records a snapshot's change of phase.
func snapshotOps(old, nv *model.Snapshot, now time.Time) []store.Op {
	if old.Phase == nv.Phase && old.Error == nv.Error {
		return nil
	}
	kind, msg := "", ""
	switch {
	case nv.Phase == model.SnapshotReverting:
		kind, msg = EventSnapshotRevert, "revert to snapshot %s asked for"
	case old.Phase == model.SnapshotReverting && nv.Phase == model.SnapshotReady && nv.Error == "":
		kind, msg = EventSnapshotReverts, "reverted to snapshot %s"
	case old.Phase == model.SnapshotReverting:
		kind, msg = EventSnapshotFailed, "revert to snapshot %s failed: "+nv.Error
	case nv.Phase == model.SnapshotReady:
		kind, msg = EventSnapshotReady, "snapshot %s ready"
	case nv.Phase == model.SnapshotFailed:
		kind, msg = EventSnapshotFailed, "snapshot %s failed: "+nv.Error
	case nv.Phase == model.SnapshotDeleting:
		kind, msg = EventSnapshotDelete, "deletion of snapshot %s asked for"
	default:
		return nil
	}
	return []store.Op{EventOp(model.Event{Time: now, Kind: kind, Object: VMObject(nv.Project, nv.VM), Project: nv.Project,
		From: string(old.Phase), To: string(nv.Phase), Message: fmt.Sprintf("VM %s: "+msg, nv.VM, nv.Name)})}
}

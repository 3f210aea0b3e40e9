package store

// Keys of VM operations kept beside the VM:
//
//	/vpool/snapshots/<project>/<vm>/<name>   model.Snapshot
const SnapshotsPrefix = Root + "snapshots/"

// SnapshotKey is the key of one snapshot of a VM.
func SnapshotKey(project, vm, name string) string {
	return SnapshotsPrefix + project + "/" + vm + "/" + name
}

// VMSnapshotsPrefix lists the snapshots of one VM.
func VMSnapshotsPrefix(project, vm string) string { return SnapshotsPrefix + project + "/" + vm + "/" }

package store

// Keys of backups (docs/backup.md):
//
//	/vpool/backup/repos/<name>          model.BackupRepo (key sealed)
//	/vpool/backup/policies/<project>    model.BackupPolicy ("_cluster": the cluster's)
//	/vpool/backup/tasks/<name>          model.BackupTask (verify, gc, sync)
//	/vpool/backups/<project>/<name>     model.Backup
//	/vpool/restores/<project>/<name>    model.Restore
const (
	BackupReposPrefix    = Root + "backup/repos/"
	BackupPoliciesPrefix = Root + "backup/policies/"
	BackupTasksPrefix    = Root + "backup/tasks/"
	BackupsPrefix        = Root + "backups/"
	RestoresPrefix       = Root + "restores/"
	// ClusterPolicyName is the policy key of the cluster's own policy.
	ClusterPolicyName = "_cluster"
)

// BackupRepoKey is the key of a repository.
func BackupRepoKey(name string) string { return BackupReposPrefix + name }

// BackupPolicyKey is the key of a project's policy (ClusterPolicyName for
// the cluster's).
func BackupPolicyKey(project string) string { return BackupPoliciesPrefix + project }

// BackupTaskKey is the key of a repository task.
func BackupTaskKey(name string) string { return BackupTasksPrefix + name }

// BackupKey is the key of a backup.
func BackupKey(project, name string) string { return BackupsPrefix + project + "/" + name }

// RestoreKey is the key of a restore.
func RestoreKey(project, name string) string { return RestoresPrefix + project + "/" + name }

package store

import "fmt"

// Keys of the audit trail (docs/audit.md) and of metering (docs/metering.md):
//
//	/vpool/audit/records/<bucket>/<seq>    a batch of records from seq on: their bytes, one per line (bucket = seq / AuditBucket)
//	/vpool/audit/pending/<server>/<id>     an audit intent: the record of a request, written in the change's own transaction
//	/vpool/audit/head                      model.AuditHead: the signed head of the chain
//	/vpool/audit/anchor                    model.AuditSignature: the last record pruned (signed)
//	/vpool/audit/exported                  the last record written to the export files
//	/vpool/cluster/audit-key               model.AuditKey: the servers' signing key (sealed)
//	/vpool/metering/<yyyy-mm>/<project>/~<n>  model.UsageRollupShard: the usage of many VMs of a project in a month, by day
//	/vpool/metering/<yyyy-mm>/<project>/<vm>  a VM's usage in a month, by day (one a VM: written before the shards, read still)
//	/vpool/metering/mark                   model.MeteringMark: how far the stored rollups are known good
const (
	AuditPrefix        = Root + "audit/"
	AuditRecordsPrefix = AuditPrefix + "records/"
	AuditPendingPrefix = AuditPrefix + "pending/"
	AuditHeadKey       = AuditPrefix + "head"
	AuditAnchorKey     = AuditPrefix + "anchor"
	AuditExportedKey   = AuditPrefix + "exported"
	AuditKeyKey        = Root + "cluster/audit-key"
	MeteringPrefix     = Root + "metering/"
	// AuditBucket records share a key prefix, so that a range of
	// records is read by listing a few buckets.
	AuditBucket = 1000
)

// AuditBucketPrefix lists the records of seq's bucket.
func AuditBucketPrefix(seq int64) string {
	return fmt.Sprintf("%s%012d/", AuditRecordsPrefix, seq/AuditBucket)
}

// AuditRecordKey is the key of the batch of records that starts at seq
// (a batch of one in stores written before batches were packed).
func AuditRecordKey(seq int64) string {
	return fmt.Sprintf("%s%020d", AuditBucketPrefix(seq), seq)
}

// MeteringMonthPrefix lists one month's rollups ("2025-03").
func MeteringMonthPrefix(month string) string { return MeteringPrefix + month + "/" }

// MeteringKey is the key of a VM's rollup for a month.
func MeteringKey(month, project, vm string) string {
	return MeteringPrefix + month + "/" + project + "/" + vm
}

// MeteringShardKey is the key of shard n of a project's rollups for a
// month. '~' is no part of a VM name (a DNS label), so a shard's key
// never meets a VM's.
func MeteringShardKey(month, project string, n int) string {
	return fmt.Sprintf("%s%s/%s/~%04d", MeteringPrefix, month, project, n)
}

// MeteringShardMark begins the last part of a shard's key.
const MeteringShardMark = "~"

// MeteringMarkKey holds model.MeteringMark (not a month: readers of the
// rollups list month prefixes).
const MeteringMarkKey = MeteringPrefix + "mark"

// MeteringSettingsKey holds model.MeteringSettings.
const MeteringSettingsKey = Root + "cluster/metering"

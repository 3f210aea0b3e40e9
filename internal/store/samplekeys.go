package store

import "fmt"

// Usage samples (model.UsageSample): each server writes the usage of the
// hosts that beat to it, one record per shard of hosts, at a bounded
// rate; the leader removes the records of servers gone quiet.
//
//	/vpool/samples/<server>/<shard>      model.UsageSample
const SamplesPrefix = Root + "samples/"

// SampleKey is the key of one shard of a server's usage samples; server
// is its agent listener address.
func SampleKey(server string, shard int) string {
	return fmt.Sprintf("%s%s/%03d", SamplesPrefix, server, shard)
}

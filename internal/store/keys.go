package store

import "fmt"

// Key layout. Every key lives under Root. Objects are JSON.
//
//	/vpool/projects/<project>             model.Project
//	/vpool/usage/<project>                model.Usage (quota accounting, CAS)
//	/vpool/vms/<project>/<name>           model.VM
//	/vpool/explanations/<project>/<name>  model.StoredExplanation (the VM's placement explanation)
//	/vpool/hosts/<host>                   model.Host
//	/vpool/alive/<host>                   liveness, attached to the host's lease
//	/vpool/alloc/<host>                   model.Allocation (placement CAS)
//	/vpool/tokens/<sha256>                model.Token
//	/vpool/pki/hosts/<host>               the host's current certificate (serial)
//	/vpool/pki/revoked/<serial-hex>       a revoked host certificate
//	/vpool/events/<seq>                   model.Event (seq = zero-padded)
//	/vpool/migrations/<id>                model.Migration
//	/vpool/cluster/policy                 model.Policy
//	/vpool/cluster/ca                     cluster CA (cert + key, PEM)
//	/vpool/cluster/leader                 leader election key (lease)
//	/vpool/cluster/seq/<name>             counters
//	/vpool/cluster/balance                model.BalanceSettings
//	/vpool/balance/plan                   model.BalancePlan (the balancer's last plan)
//	/vpool/energy/meta                    model.EnergyMeta (the ledger's header)
//	/vpool/energy/shards/<n>              model.EnergyHostShard (the records of some hosts)
//	/vpool/energy/hosts/<host>            model.EnergyHostRecord, before issue 14's third round (read, then deleted)
//	/vpool/energy/projects/<project>      model.EnergyProjectRecord
//	/vpool/energy/ledger                  the whole ledger before issue 11 (read once, then deleted)
const (
	Root           = "/vpool/"
	ProjectsPrefix = Root + "projects/"
	UsagePrefix    = Root + "usage/"
	VMsPrefix      = Root + "vms/"
	HostsPrefix    = Root + "hosts/"
	AlivePrefix    = Root + "alive/"
	AllocPrefix    = Root + "alloc/"
	TokensPrefix   = Root + "tokens/"
	// PKIPrefix holds the host certificate records: HostCertsPrefix
	// binds each host name to the serial of its one valid certificate,
	// RevokedPrefix lists revoked serials until they expire.
	PKIPrefix       = Root + "pki/"
	HostCertsPrefix = PKIPrefix + "hosts/"
	RevokedPrefix   = PKIPrefix + "revoked/"
	EventsPrefix    = Root + "events/"
	// MigrationsPrefix holds model.Migration objects by id.
	MigrationsPrefix = Root + "migrations/"
	PolicyKey        = Root + "cluster/policy"
	CAKey            = Root + "cluster/ca"
	LeaderKey        = Root + "cluster/leader"
	BalanceKey       = Root + "cluster/balance"
	BalancePlanKey   = Root + "balance/plan"
	// HAStateKey holds model.HAState: the last host failovers.
	HAStateKey = Root + "ha/state"
	EnergyKey  = Root + "energy/ledger"
	// EnergyPrefix holds the energy ledger's records.
	EnergyPrefix         = Root + "energy/"
	EnergyMetaKey        = EnergyPrefix + "meta"
	EnergyHostsPrefix    = EnergyPrefix + "hosts/"
	EnergyProjectsPrefix = EnergyPrefix + "projects/"
	// EnergyShardsPrefix holds the hosts' energy records, many hosts a
	// key (EnergyHostsPrefix held one a host before).
	EnergyShardsPrefix = EnergyPrefix + "shards/"
)

// EnergyShardKey is the key of shard n of the hosts' energy records.
func EnergyShardKey(n int) string { return fmt.Sprintf("%s%04d", EnergyShardsPrefix, n) }

// EnergyHostKey is the key of a host's energy record.
func EnergyHostKey(host string) string { return EnergyHostsPrefix + host }

// EnergyProjectKey is the key of a project's energy record.
func EnergyProjectKey(project string) string { return EnergyProjectsPrefix + project }

// ProjectKey is the key of a project.
func ProjectKey(name string) string { return ProjectsPrefix + name }

// UsageKey is the key of a project's quota usage.
func UsageKey(project string) string { return UsagePrefix + project }

// VMKey is the key of a VM.
func VMKey(project, name string) string { return VMsPrefix + project + "/" + name }

// VMProjectPrefix lists one project's VMs.
func VMProjectPrefix(project string) string { return VMsPrefix + project + "/" }

// ExplanationsPrefix holds each placed VM's placement explanation apart
// from its record: the record is rewritten by every status report and
// decoded by every server's view, the explanation is written once a
// placement and read only by GET vm (docs/scale.md, seventh round).
const ExplanationsPrefix = Root + "explanations/"

// ExplanationKey is the key of a VM's placement explanation.
func ExplanationKey(project, name string) string { return ExplanationsPrefix + project + "/" + name }

// HostKey is the key of a host.
func HostKey(name string) string { return HostsPrefix + name }

// AliveKey is the liveness key of a host.
func AliveKey(name string) string { return AlivePrefix + name }

// AllocKey is the allocation key of a host.
func AllocKey(name string) string { return AllocPrefix + name }

// TokenKey is the key of a token, by the hex SHA-256 of its secret.
func TokenKey(hash string) string { return TokensPrefix + hash }

// HostCertKey is the key of a host's certificate binding.
func HostCertKey(host string) string { return HostCertsPrefix + host }

// RevokedKey is the key of a revoked certificate, by its serial (hex).
func RevokedKey(serial string) string { return RevokedPrefix + serial }

// EventKey is the key of an event written at unixNano with a random
// suffix; keys sort by time, and an event's ID is the revision it was
// written at.
func EventKey(unixNano int64, suffix string) string {
	return fmt.Sprintf("%s%020d-%s", EventsPrefix, unixNano, suffix)
}

// MigrationKey is the key of a migration.
func MigrationKey(id string) string { return MigrationsPrefix + id }

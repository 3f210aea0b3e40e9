package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// EnergyRecords is the energy ledger as stored: a header, one record per
// host (stored in shards of many hosts) and one per project
// (model/energy.go). Every value is bounded by
// one host's VMs or one project's unplaced VMs, never by history.
type EnergyRecords struct {
	Meta     model.EnergyMeta
	Hosts    map[string]model.EnergyHostRecord
	Projects map[string]model.EnergyProjectRecord
	// Legacy says the records were read from the single value stored
	// before issue 11 (store.EnergyKey); WriteEnergy deletes it.
	Legacy bool
}

// ReadEnergy reads the ledger's records, and the stored bytes by key (to
// hand to WriteEnergy, which then writes only what changed). found is
// false when nothing is stored. A ledger stored whole by an older leader
// is converted: its VMs' energy goes to their projects' unplaced VMs
// until the next write re-homes it.
func (r *Repo) ReadEnergy(ctx context.Context) (rec EnergyRecords, written map[string][]byte, found bool, err error) {
	kvs, _, err := r.st.List(ctx, store.EnergyPrefix)
	if err != nil {
		return rec, nil, false, fmt.Errorf("state: read energy ledger: %w", err)
	}
	rec = EnergyRecords{Hosts: map[string]model.EnergyHostRecord{}, Projects: map[string]model.EnergyProjectRecord{}}
	written = make(map[string][]byte, len(kvs))
	var legacy []byte
	for _, kv := range kvs {
		written[kv.Key] = kv.Value
		var err error
		switch {
		case kv.Key == store.EnergyMetaKey:
			found = true
			err = json.Unmarshal(kv.Value, &rec.Meta)
		case strings.HasPrefix(kv.Key, store.EnergyShardsPrefix):
			var sh model.EnergyHostShard
			err = json.Unmarshal(kv.Value, &sh)
			for h, hr := range sh.Hosts {
				keepNewer(rec.Hosts, h, hr)
			}
		case strings.HasPrefix(kv.Key, store.EnergyHostsPrefix): // one a host, before the shards
			var h model.EnergyHostRecord
			err = json.Unmarshal(kv.Value, &h)
			keepNewer(rec.Hosts, strings.TrimPrefix(kv.Key, store.EnergyHostsPrefix), h)
		case strings.HasPrefix(kv.Key, store.EnergyProjectsPrefix):
			var p model.EnergyProjectRecord
			err = json.Unmarshal(kv.Value, &p)
			rec.Projects[strings.TrimPrefix(kv.Key, store.EnergyProjectsPrefix)] = p
		case kv.Key == store.EnergyKey:
			legacy = kv.Value
		}
		if err != nil {
			return rec, nil, false, fmt.Errorf("state: decode %s: %w", kv.Key, err)
		}
	}
	if found || legacy == nil {
		rec.Legacy = legacy != nil
		return rec, written, found, nil
	}
	var old model.EnergyLedger
	if err := json.Unmarshal(legacy, &old); err != nil {
		return rec, nil, false, fmt.Errorf("state: decode %s: %w", store.EnergyKey, err)
	}
	return fromLegacy(old), written, true, nil
}

// keepNewer puts hr as host's record unless one with more energy is
// there: a host's energy only grows, so that one is newer (a persist cut
// short can leave a host in two records).
func keepNewer(hosts map[string]model.EnergyHostRecord, host string, hr model.EnergyHostRecord) {
	if old, ok := hosts[host]; ok && old.Joules > hr.Joules {
		return
	}
	hosts[host] = hr
}

// fromLegacy converts a ledger stored whole into records.
func fromLegacy(old model.EnergyLedger) EnergyRecords {
	rec := EnergyRecords{Meta: model.EnergyMeta{Since: old.Since, At: old.At, TotalJ: old.TotalJ}, Legacy: true,
		Hosts: map[string]model.EnergyHostRecord{}, Projects: map[string]model.EnergyProjectRecord{}}
	for h, j := range old.HostJ {
		rec.Hosts[h] = model.EnergyHostRecord{Joules: j, EnergyHost: old.Hosts[h]}
	}
	for p, j := range old.ProjectJ {
		pr := rec.Projects[p]
		pr.Joules = j
		rec.Projects[p] = pr
	}
	for vm, j := range old.VMJ {
		p, _, _ := strings.Cut(vm, "/")
		pr := rec.Projects[p]
		if pr.VMs == nil {
			pr.VMs = map[string]float64{}
		}
		pr.VMs[vm] = j
		rec.Projects[p] = pr
	}
	return rec
}

// Sizes of the hosts' shards: a shard holds about energyHostsPerShard
// hosts or energyVMsPerShard VMs' energy, whichever comes first (some
// 100 KiB of JSON), so that a persist at rest writes about one key per
// 128 hosts instead of one per host (docs/scale.md).
const (
	energyHostsPerShard = 128
	energyVMsPerShard   = 2048
)

// EnergyShards is how many shards hold the records of hosts holding vms
// VMs between them.
func EnergyShards(hosts, vms int) int {
	return max(1, (hosts+energyHostsPerShard-1)/energyHostsPerShard, (vms+energyVMsPerShard-1)/energyVMsPerShard)
}

// energyShardOf is the shard of n a host's record goes to.
func energyShardOf(host string, n int) int {
	f := fnv.New32a()
	_, _ = f.Write([]byte(host))
	return int(f.Sum32() % uint32(n))
}

// encodeEnergy renders rec as the values to store, by key: the hosts'
// records in shards (EnergyShards), one per project, the header.
func encodeEnergy(rec EnergyRecords) map[string][]byte {
	out := make(map[string][]byte, len(rec.Projects)+1)
	if len(rec.Hosts) > 0 {
		vms := 0
		for _, hr := range rec.Hosts {
			vms += len(hr.VMs)
		}
		n := EnergyShards(len(rec.Hosts), vms)
		shards := make([]model.EnergyHostShard, n)
		for h, hr := range rec.Hosts {
			sh := &shards[energyShardOf(h, n)]
			if sh.Hosts == nil {
				sh.Hosts = map[string]model.EnergyHostRecord{}
			}
			sh.Hosts[h] = hr
		}
		for i, sh := range shards {
			if sh.Hosts != nil {
				out[store.EnergyShardKey(i)] = encode(sh)
			}
		}
	}
	for p, pr := range rec.Projects {
		out[store.EnergyProjectKey(p)] = encode(pr)
	}
	out[store.EnergyMetaKey] = encode(rec.Meta)
	return out
}

// energyBatch and energyTxnBytes keep the ledger's transactions under
// etcd's operation cap and its request size (1.5 MiB).
const (
	energyBatch    = 100
	energyTxnBytes = 512 << 10
)

// WriteEnergy stores rec: the records whose bytes differ from written
// (what ReadEnergy or the previous WriteEnergy returned), deletes the
// records written before that rec no longer has (deleted projects,
// folded into the header, shards no longer used, and what older leaders
// stored: the whole-ledger value, a record per host), then the header
// last. It returns what is stored now. The records do not change in one
// transaction (there can be hundreds): a crash part-way leaves some a
// persist interval older, nothing torn; puts go before deletes, so a
// host's record is never missing.
func (r *Repo) WriteEnergy(ctx context.Context, rec EnergyRecords, written map[string][]byte) (map[string][]byte, error) {
	now := encodeEnergy(rec)
	var ops []store.Op
	for k, v := range now {
		if k != store.EnergyMetaKey && !bytes.Equal(v, written[k]) {
			ops = append(ops, store.Put(k, v))
		}
	}
	for k := range written {
		if _, keep := now[k]; !keep && k != store.EnergyMetaKey {
			ops = append(ops, store.Delete(k))
		}
	}
	// puts before deletes: a write cut short may leave a host in two
	// records (ReadEnergy keeps the newer), never in none
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].Kind != ops[j].Kind {
			return ops[i].Kind == store.OpPut
		}
		return ops[i].Key < ops[j].Key
	})
	ops = append(ops, store.Put(store.EnergyMetaKey, now[store.EnergyMetaKey]))
	for len(ops) > 0 {
		n, size := 0, 0
		for n < len(ops) && n < energyBatch && (n == 0 || size+len(ops[n].Value) <= energyTxnBytes) {
			size += len(ops[n].Value)
			n++
		}
		if _, _, err := r.txn(ctx, nil, ops[:n]); err != nil {
			return written, fmt.Errorf("state: write energy ledger: %w", err)
		}
		ops = ops[n:]
	}
	return now, nil
}

// EnergyHosts reads the hosts' energy records (what each drew, its
// power at the ledger's last persist).
func (r *Repo) EnergyHosts(ctx context.Context) (map[string]model.EnergyHostRecord, error) {
	rec, _, _, err := r.ReadEnergy(ctx)
	if err != nil {
		return nil, err
	}
	return rec.Hosts, nil
}

// Ledger assembles the records into the view readers use: joules per
// host, VM and project, the folded energy of deleted VMs, hosts and
// projects as lines of their own, so that every total adds up.
func (rec EnergyRecords) Ledger() model.EnergyLedger {
	m := rec.Meta
	out := model.EnergyLedger{Since: m.Since, At: m.At, TotalJ: m.TotalJ, HostJ: map[string]float64{}, VMJ: map[string]float64{},
		ProjectJ: map[string]float64{}, Hosts: map[string]model.EnergyHost{}}
	for h, hr := range rec.Hosts {
		out.HostJ[h], out.Hosts[h] = hr.Joules, hr.EnergyHost
		for vm, j := range hr.VMs {
			out.VMJ[vm] += j
		}
	}
	for p, pr := range rec.Projects {
		out.ProjectJ[p] = pr.Joules
		for vm, j := range pr.VMs {
			out.VMJ[vm] += j
		}
		if pr.DeletedVMsJ > 0 {
			out.VMJ[p+"/"+model.EnergyDeletedVMs] += pr.DeletedVMsJ
		}
	}
	if m.DeletedHostsJ > 0 {
		out.HostJ[model.EnergyDeletedHosts] = m.DeletedHostsJ
	}
	if m.DeletedProjectsJ > 0 {
		out.ProjectJ[model.EnergyDeletedProjects] = m.DeletedProjectsJ
		out.VMJ[model.EnergyDeletedProjects+"/"+model.EnergyDeletedVMs] = m.DeletedProjectsJ
	}
	return out
}

// EnergyLedger reads the assembled ledger (empty when none is stored).
func (r *Repo) EnergyLedger(ctx context.Context) (model.EnergyLedger, error) {
	rec, _, _, err := r.ReadEnergy(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return model.EnergyLedger{}, nil
	}
	if err != nil {
		return model.EnergyLedger{}, err
	}
	return rec.Ledger(), nil
}

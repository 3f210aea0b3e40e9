package placement

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/cli"
	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
	"github.com/vpool/vpool/internal/store/storetest"
)

// vpool runs the CLI in-process against s and returns stdout and the
// exit code.
func (s *stack) vpool(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := cli.NewRoot("test")
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	code := cli.Main(root, append([]string{"--addr", s.addr, "--token", s.admin, "--project", "p"}, args...))
	if errb.Len() > 0 {
		t.Logf("vpool %s: stderr %s", strings.Join(args, " "), errb.String())
	}
	return out.String(), code
}

// mustVpool fails the test unless the CLI exits 0.
func (s *stack) mustVpool(t *testing.T, args ...string) string {
	t.Helper()
	out, code := s.vpool(t, args...)
	if code != 0 {
		t.Fatalf("vpool %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

func (s *stack) vm(t *testing.T, name string) *model.VM {
	t.Helper()
	vm, err := s.client.GetVM(context.Background(), "p", name)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// waitVMs polls until cond holds for every named VM.
func (s *stack) waitVMs(t *testing.T, what string, cond func(*model.VM) bool, names ...string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok := true
		for _, n := range names {
			if !cond(s.vm(t, n)) {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// explainedOver holds for a VM whose explanation counted n hosts (the
// controller's cache follows the store through watches: a decision taken
// before the last host arrived is redone when it does).
func explainedOver(n int) func(*model.VM) bool {
	return func(vm *model.VM) bool { return vm.Status.Explanation != nil && vm.Status.Explanation.Hosts == n }
}

func contains(t *testing.T, what, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// TestPlacementThroughAPIAndCLI drives placement the way a user does —
// the CLI, through the REST API, to the scheduling controller on a real
// embedded etcd: the policy as data, dry runs that change nothing, a
// batch whose anti-affinity group is placed all or nothing, resource
// controls stored and shown, explanations in `vm show`, and pending VMs
// placed as soon as capacity appears.
func TestPlacementThroughAPIAndCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded etcd")
	}
	t.Setenv("HOME", t.TempDir()) // no user config file
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	s := startStack(t, startEtcd(t, true))
	ctx := context.Background()
	if _, err := s.repo.CreateProject(ctx, &model.Project{Meta: model.Meta{Name: "p"}}); err != nil {
		t.Fatal(err)
	}
	seedHosts(t, s.repo, 2, func(_ int, h *model.Host) {
		h.Capacity = model.Resources{CPUs: 4, Memory: 8 * model.GiB, Disk: model.TiB}
	})

	t.Run("policy", func(t *testing.T) {
		s.mustVpool(t, "cluster", "policy", "set", "--cpu-ratio", "1", "--memory-ratio", "1", "--strategy", "spread", "--weight", "balance=0.5")
		out := s.mustVpool(t, "cluster", "policy", "show", "-o", "json")
		var p model.Policy
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			t.Fatalf("policy show -o json: %v\n%s", err, out)
		}
		if p.Strategy != "spread" || p.Ratios.CPU != 1 || p.Ratios.Memory != 1 || p.Weights["balance"] != 0.5 {
			t.Errorf("stored policy %+v", p)
		}
		contains(t, "policy show", s.mustVpool(t, "cluster", "policy", "show"), "spread", "Weight balance")
		if out, code := s.vpool(t, "cluster", "policy", "set", "--memory-ratio", "9"); code == 0 {
			t.Errorf("memory ratio 9 accepted:\n%s", out)
		}
	})

	t.Run("dry run changes nothing", func(t *testing.T) {
		_, before, err := s.st.List(ctx, "/vpool/vms/")
		if err != nil {
			t.Fatal(err)
		}
		out := s.mustVpool(t, "vm", "create", "probe", "--vcpus", "1", "--memory", "1GiB", "--dry-run")
		contains(t, "dry run", out, "vm probe would be placed on h00", "nothing was created", "Top candidates")
		out, code := s.vpool(t, "vm", "create", "huge", "--vcpus", "16", "--memory", "1GiB", "--dry-run")
		if code != 1 {
			t.Errorf("dry run of a VM that fits nowhere: exit %d", code)
		}
		contains(t, "dry run of huge", out, "would not fit", "2 hosts: insufficient")
		// A batch dry run answers as the batch would be placed: 3
		// anti-affine members on 2 hosts go nowhere.
		out, code = s.vpool(t, "vm", "create", "web", "--count", "3", "--affinity-group", "web", "--affinity", "anti-affinity", "--dry-run")
		if code != 1 {
			t.Errorf("batch dry run of 3 anti-affine VMs on 2 hosts: exit %d", code)
		}
		contains(t, "batch dry run", out, "vm web-1 would not fit", "placed all or nothing")
		written := storetest.WritesSince(t, s.st, before, store.AuditPrefix) // the trail records the dry runs
		if vms, _, _ := s.repo.ListVMs(ctx, "p"); len(vms) != 0 || len(written) > 0 {
			t.Errorf("dry runs left %d VMs and wrote %v", len(vms), written)
		}
	})

	t.Run("batch all or nothing", func(t *testing.T) {
		s.mustVpool(t, "vm", "create", "web", "--count", "3", "--vcpus", "1", "--memory", "1GiB", "--affinity-group", "web", "--affinity", "anti-affinity", "--no-wait")
		s.waitVMs(t, "web explained", explainedOver(2), "web-1", "web-2", "web-3")
		for _, n := range []string{"web-1", "web-2", "web-3"} {
			if vm := s.vm(t, n); vm.Status.Host != "" || vm.Status.Phase != model.PhasePending {
				t.Errorf("%s on %q (%s): the group must be all or nothing", n, vm.Status.Host, vm.Status.Phase)
			}
		}
		contains(t, "vm show web-2", s.mustVpool(t, "vm", "show", "web-2"),
			"Phase:", "pending", "waiting for capacity", "group p/web placed all or nothing", "Rejected by filters", "anti-affinity")
	})

	t.Run("controls stored and shown", func(t *testing.T) {
		s.mustVpool(t, "vm", "create", "ctl", "--vcpus", "2", "--memory", "2GiB", "--cpu-shares", "2048", "--cpu-reservation", "1.5",
			"--cpu-limit", "2", "--memory-reservation", "1GiB", "--memory-limit", "4GiB", "--disk-iops", "500", "--disk-bps", "10MiB", "--no-wait")
		s.waitVMs(t, "ctl placed", func(vm *model.VM) bool { return vm.Status.Host != "" }, "ctl")
		want := model.Controls{CPUShares: 2048, CPUReservation: 1500, CPULimit: 2000, MemoryReservation: model.GiB, MemoryLimit: 4 * model.GiB,
			DiskIOPS: 500, DiskBps: 10 << 20}
		if got := s.vm(t, "ctl").Spec.Controls; got != want {
			t.Errorf("stored controls %+v, want %+v", got, want)
		}
		contains(t, "vm show ctl", s.mustVpool(t, "vm", "show", "ctl"), "cpu-shares 2048", "cpu-reservation 1.5", "cpu-limit 2",
			"memory-reservation 1GiB", "memory-limit 4GiB", "disk-iops 500", "disk-bps 10MiB/s", "Chosen:", "Top candidates")
		if _, code := s.vpool(t, "vm", "create", "bad", "--vcpus", "1", "--cpu-reservation", "2", "--no-wait"); code == 0 {
			t.Error("a CPU reservation above the vCPUs was accepted")
		}
	})

	t.Run("pending until capacity appears", func(t *testing.T) {
		s.mustVpool(t, "vm", "create", "big", "--vcpus", "6", "--memory", "2GiB", "--no-wait")
		s.waitVMs(t, "big explained", explainedOver(2), "big")
		if vm := s.vm(t, "big"); vm.Status.Host != "" || vm.Status.Phase != model.PhasePending {
			pol, _, _ := s.repo.GetPolicy(ctx)
			t.Fatalf("big on %q (%s) past capacity × ratio: %+v policy %+v", vm.Status.Host, vm.Status.Phase, vm.Status.Explanation, pol)
		}
		contains(t, "vm show big", s.mustVpool(t, "vm", "show", "big"), "pending", "insufficient CPU (needs 6 vCPUs")
		seedHosts(t, s.repo, 3, func(i int, h *model.Host) { // h000, h001 unchanged; h002 new
			h.Capacity = model.Resources{CPUs: 4 + 4*(i/2), Memory: 8 * model.GiB * model.Bytes(1+i/2), Disk: model.TiB}
		})
		s.waitVMs(t, "big and the web group placed", func(vm *model.VM) bool { return vm.Status.Host != "" }, "big", "web-1", "web-2", "web-3")
		if h := s.vm(t, "big").Status.Host; h != "h002" {
			t.Errorf("big on %s, want the new host h002", h)
		}
		hosts := map[string]bool{}
		for _, n := range []string{"web-1", "web-2", "web-3"} {
			hosts[s.vm(t, n).Status.Host] = true
		}
		if len(hosts) != 3 {
			t.Errorf("anti-affine web members on hosts %v", hosts)
		}
		vms, _, err := s.repo.ListVMs(ctx, "p")
		if err != nil {
			t.Fatal(err)
		}
		checkHosts(t, s.repo, vms)
	})
}

package qemu

import (
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPlanMounts(t *testing.T) {
	tmp := func(p string) mountOp { return mountOp{Path: p, Mode: 0o1777} }
	hid := func(p string) mountOp { return mountOp{Path: p, Mode: 0o711} }
	bind := func(p string) mountOp { return mountOp{Path: p, Bind: true} }
	file := func(p string) mountOp { return mountOp{Path: p, Bind: true, File: true} }
	for _, tc := range []struct {
		name string
		hide map[string]os.FileMode
		keep []string
		file []string
		want []mountOp
	}{
		{
			name: "nothing kept below a hidden dir",
			hide: map[string]os.FileMode{"/tmp": 0o1777, "/home": 0o711},
			keep: []string{"/var/lib/vpool/qemu"},
			want: []mountOp{hid("/home"), tmp("/tmp")},
		},
		{
			name: "the state dir under /tmp is bound back, its vms/ hidden again, the VM's own dir bound back",
			hide: map[string]os.FileMode{"/tmp": 0o1777, "/tmp/s/qemu/vms": 0o711},
			keep: []string{"/tmp/s/qemu", "/tmp/s/qemu/vms/p.a", "/tmp/s/qemu/pools/default"},
			want: []mountOp{tmp("/tmp"), bind("/tmp/s/qemu"), hid("/tmp/s/qemu/vms"), bind("/tmp/s/qemu/vms/p.a")},
		},
		{
			name: "the agent's dir hidden, the driver's dir and image cache inside it kept",
			hide: map[string]os.FileMode{"/home": 0o711, "/home/u/.vpool/hosts/h": 0o711},
			keep: []string{"/home/u/.vpool/hosts/h/qemu", "/home/u/.vpool/hosts/h/images/ab", "/usr/bin"},
			want: []mountOp{hid("/home"), hid("/home/u/.vpool/hosts/h"), bind("/home/u/.vpool/hosts/h/images/ab"), bind("/home/u/.vpool/hosts/h/qemu")},
		},
		{
			name: "shared inputs are bound one file at a time; a layer in a kept dir needs nothing",
			hide: map[string]os.FileMode{"/var/lib/vpool/agent": 0o711, "/var/lib/vpool/agent/qemu": 0o711},
			keep: []string{"/var/lib/vpool/agent/qemu/vms/p.a", "/var/lib/vpool/agent/qemu/pools/default"},
			file: []string{"/var/lib/vpool/agent/images/ab.qcow2", "/var/lib/vpool/agent/qemu/pools/default/p.a-root/root.0.qcow2", "/usr/share/k"},
			want: []mountOp{hid("/var/lib/vpool/agent"), file("/var/lib/vpool/agent/images/ab.qcow2"), hid("/var/lib/vpool/agent/qemu"),
				bind("/var/lib/vpool/agent/qemu/pools/default"), bind("/var/lib/vpool/agent/qemu/vms/p.a")},
		},
		{
			name: "a dir both hidden and kept is kept; / is never hidden; similar prefixes are not parents",
			hide: map[string]os.FileMode{"/tmp": 0o1777, "/": 0o711, "/mnt": 0o711},
			keep: []string{"/tmp", "/mnt-pool/x"},
			want: []mountOp{hid("/mnt")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, planMounts(tc.hide, tc.keep, tc.file)); diff != "" {
				t.Errorf("planMounts (-want +got):\n%s", diff)
			}
		})
	}
}

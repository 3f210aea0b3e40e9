package qemu

import (
	"testing"

	"github.com/vpool/vpool/internal/hypervisor"
	"github.com/vpool/vpool/internal/model"
)

func TestNetworkConfig(t *testing.T) {
	cfg := hypervisor.VMConfig{Spec: model.VMSpec{NICs: []model.NIC{
		{Name: "nic0", MAC: "0A:00:00:00:00:01", IP: "10.1.0.5"},
		{Name: "nic1", MAC: "0a:00:00:00:00:02", IP: "10.2.0.5"},
		{Name: "nic2", Network: "lan"}, // a host network: the guest's own business
	}}, Ports: []hypervisor.NICPort{
		{Bridge: "vpb-1", MTU: 1450, Address: "10.1.0.5/24", Gateway: "10.1.0.1", DHCP: true},
		{Bridge: "vpb-2", MTU: 9000, Address: "10.2.0.5/16", Gateway: "10.2.0.1"},
	}}
	want := `version: 2
ethernets:
  nic0:
    match:
      macaddress: "0a:00:00:00:00:01"
    set-name: nic0
    mtu: 1450
    dhcp4: true
  nic1:
    match:
      macaddress: "0a:00:00:00:00:02"
    set-name: nic1
    mtu: 9000
    addresses: ["10.2.0.5/16"]
    routes:
      - to: 0.0.0.0/0
        via: "10.2.0.1"
`
	if got := string(networkConfig(cfg)); got != want {
		t.Errorf("network-config:\n%s\nwant:\n%s", got, want)
	}
	files := seedFiles(hypervisor.VMConfig{Spec: model.VMSpec{CloudInit: &model.CloudInit{}, NICs: cfg.Spec.NICs}, Ports: cfg.Ports})
	if string(files["network-config"]) != want {
		t.Error("the seed has no network-config")
	}
	if networkConfig(hypervisor.VMConfig{Spec: model.VMSpec{NICs: []model.NIC{{Name: "nic0"}}}}) != nil {
		t.Error("a VM without vpool NICs got a network-config")
	}
}

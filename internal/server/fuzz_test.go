package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/model"
)

// The fuzz targets feed arbitrary bodies to the request decoders and the
// validation behind them. Properties: no panic; every refusal is a 4xx
// api.Error with a code and a message; whatever is accepted is valid and
// survives a JSON round trip. Seed corpora live in testdata/fuzz/<Target>
// and run as ordinary tests.

func checkRefusal(t *testing.T, err error) {
	t.Helper()
	he := toHTTP(err)
	if he.status < 400 || he.status >= 500 || he.body.Code == "" || he.body.Message == "" {
		t.Fatalf("refusal %v mapped to %d %+v", err, he.status, he.body)
	}
}

func FuzzDecodeVMCreate(f *testing.F) {
	f.Add([]byte(`{"name":"web1","spec":{"vcpus":2,"memory":1073741824,"disks":[{"size":10737418240}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req api.VMCreateRequest
		if he := decodeBytes(body, &req); he != nil {
			checkRefusal(t, he)
			return
		}
		vm, err := buildVM("p", req.Name, req.Spec, "")
		if err != nil {
			checkRefusal(t, err)
			return
		}
		b, err := json.Marshal(vm)
		if err != nil {
			t.Fatal(err)
		}
		var back model.VM
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if err := back.Spec.Validate(); err != nil {
			t.Fatalf("accepted spec fails validation after a round trip: %v", err)
		}
	})
}

func FuzzDecodeVMBatch(f *testing.F) {
	f.Add([]byte(`{"prefix":"w","count":3,"spec":{"vcpus":1,"memory":67108864}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req api.VMBatchRequest
		if he := decodeBytes(body, &req); he != nil {
			checkRefusal(t, he)
			return
		}
		vms, err := batchItems("p", &req)
		if err != nil {
			checkRefusal(t, err)
			return
		}
		if len(vms) == 0 || len(vms) > 50 {
			t.Fatalf("accepted a batch of %d", len(vms))
		}
		for _, v := range vms {
			if model.ValidName("name", v.Name) != nil {
				t.Fatalf("accepted bad name %q", v.Name)
			}
		}
	})
}

func FuzzDecodeVMPatch(f *testing.F) {
	f.Add([]byte(`{"vcpus":4,"memory":2147483648,"restart":true}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req api.VMPatchRequest
		if he := decodeBytes(body, &req); he != nil {
			checkRefusal(t, he)
			return
		}
		spec := model.VMSpec{VCPUs: 1, Memory: 64 * model.MiB}
		if req.VCPUs != nil {
			spec.VCPUs = *req.VCPUs
		}
		if req.Memory != nil {
			spec.Memory = *req.Memory
		}
		if req.Controls != nil {
			spec.Controls = *req.Controls
		}
		spec.Labels = req.Labels
		if err := spec.Validate(); err != nil {
			var fe *model.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("validation error without a field: %v", err)
			}
		}
	})
}

func FuzzDecodeProject(f *testing.F) {
	f.Add([]byte(`{"name":"team-a","description":"x","quota":{"vcpus":8,"vms":10}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req api.ProjectCreateRequest
		if he := decodeBytes(body, &req); he != nil {
			checkRefusal(t, he)
			return
		}
		p := model.Project{Meta: model.Meta{Name: req.Name}, Quota: req.Quota}
		if err := p.Validate(); err != nil {
			checkRefusal(t, err)
			return
		}
		if p.Quota.VMs < 0 || p.Quota.Memory < 0 {
			t.Fatalf("accepted negative quota %+v", p.Quota)
		}
	})
}

func FuzzDecodeToken(f *testing.F) {
	f.Add([]byte(`{"project":"default","role":"viewer","ttl":"24h"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var req api.TokenCreateRequest
		if he := decodeBytes(body, &req); he != nil {
			checkRefusal(t, he)
			return
		}
		if _, err := parseTTL("ttl", req.TTL, 0, 1<<62); err != nil {
			var he *httpError
			if !errors.As(err, &he) || he.status != http.StatusBadRequest || he.body.Field != "ttl" {
				t.Fatalf("ttl refusal %v", err)
			}
		}
	})
}

package state

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/model"
	"github.com/vpool/vpool/internal/store"
)

// fill sets every settable field reachable from v to a value that is not
// zero (n varies them): strings, numbers, bools, times, one element in
// each slice and map, pointers to filled values.
func fill(v reflect.Value, n int, depth int) {
	if depth > 8 {
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + strings.Repeat("x", n%3) + "é")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(n + 1))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(n + 1))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(n) + 0.25)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), n+1, depth+1)
		v.Set(p)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte("bytes"))
			return
		}
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0), n+1, depth+1)
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, n+1, depth+1)
		fill(e, n+2, depth+1)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Unix(1.7e9+int64(n), int64(n)*1000).UTC()))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n+i, depth+1)
			}
		}
	}
}

// TestDecodeVMMatchesEncodingJSON: DecodeVM (go-json-experiment/json,
// encoding/json for what only that one takes) gives the VM encoding/json
// gives, for a VM with every field set, an empty one, the placed VM of
// the benchmark, a record with a member this build does not know, and
// one that only encoding/json takes (invalid UTF-8, a member twice).
func TestDecodeVMMatchesEncodingJSON(t *testing.T) {
	full := &model.VM{}
	fill(reflect.ValueOf(full).Elem(), 0, 0)
	full.Revision = 0
	records := map[string][]byte{
		"every field": encodeVM(full),
		"empty":       encodeVM(&model.VM{}),
		"placed":      encodeVM(storedPlacedVM()),
		"unknown":     []byte(`{"name":"a","project":"p","spec":{"vcpus":2},"status":{"phase":"running"},"fromTheFuture":{"x":[1,2]}}`),
		"bad utf-8":   []byte("{\"name\":\"a\",\"status\":{\"message\":\"\xff\xfe\"}}"),
		"twice":       []byte(`{"name":"a","name":"b"}`),
	}
	for what, b := range records {
		kv := store.KV{Key: store.VMKey("p", "a"), Value: b, ModRev: 9}
		got, err := DecodeVM(kv)
		if err != nil {
			t.Errorf("%s: %v", what, err)
			continue
		}
		want := &model.VM{}
		if err := json.Unmarshal(b, want); err != nil {
			t.Fatalf("%s: encoding/json: %v", what, err)
		}
		want.Revision = 9
		if !reflect.DeepEqual(got, want) {
			g, _ := json.Marshal(got)
			w, _ := json.Marshal(want)
			t.Errorf("%s: DecodeVM gives\n%s\nencoding/json\n%s", what, g, w)
		}
	}
	if _, err := DecodeVM(store.KV{Key: "k", Value: []byte(`{"name":`)}); err == nil {
		t.Error("a truncated record decoded")
	}
}

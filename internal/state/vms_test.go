package state

import "testing"

// TestAppendVMJSON: a page's items (AppendVMJSON, no copy of its own)
// are what VMJSON answers for one VM, for records of every shape.
func TestAppendVMJSON(t *testing.T) {
	for _, v := range []string{`{"name":"a","spec":{"vcpus":1}}`, `{}`, `{"revision":3,"name":"b"}`, `[1]`, ``} {
		want := string(VMJSON([]byte(v), 42))
		got := string(AppendVMJSON([]byte("prefix,"), []byte(v), 42))
		if got != "prefix,"+want {
			t.Errorf("%s: appended %s, want prefix,%s", v, got, want)
		}
	}
}

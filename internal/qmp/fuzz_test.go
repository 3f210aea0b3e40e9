package qmp

import (
	"errors"
	"testing"
)

// FuzzDecodeMessage checks that the reply decoder never panics and that
// whatever it accepts is exactly one kind of message. The seed corpus runs
// as part of the normal tests.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		greeting,
		`{"return": {}, "id": 1}`,
		`{"return": [{"device": "vd0", "stats": {"rd_bytes": 5}}], "id": 18446744073709551615}`,
		`{"error": {"class": "GenericError", "desc": "boom"}, "id": 7}`,
		`{"error": {}, "id": "x"}`,
		`{"event": "SHUTDOWN", "data": {"guest": true}, "timestamp": {"seconds": 1, "microseconds": 2}}`,
		`{"event": "X", "timestamp": {"seconds": -1, "microseconds": 99999999}}`,
		`{"return": 3, "error": {"class": "a"}}`,
		`{}`, `[]`, `null`, `"str"`, `{"id": 1}`, `{"return": null}`, `{"QMP": null}`,
		"{\"return\": {}}\n{\"return\": {}}",
		`{"return": {"a": 1e999}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v does not wrap ErrProtocol", err)
			}
			return
		}
		switch m.kind {
		case kindGreeting:
		case kindReturn:
			if m.ret == nil {
				t.Fatal("return message without a value")
			}
		case kindError:
			if m.err == nil || m.err.Class == "" {
				t.Fatal("error message without a class")
			}
		case kindEvent:
			if m.event.Name == "" {
				t.Fatal("event without a name")
			}
		default:
			t.Fatalf("accepted message of unknown kind %d", m.kind)
		}
	})
}

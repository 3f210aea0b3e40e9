package qmp

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestExecuteOOB: out-of-band execution is negotiated only when asked
// for and offered, and ExecuteOOB then sends exec-oob; otherwise it
// fails with ErrNoOOB and sends nothing.
func TestExecuteOOB(t *testing.T) {
	noOOB := strings.Replace(greeting, `"capabilities": ["oob"]`, `"capabilities": []`, 1)
	for _, tc := range []struct {
		name  string
		greet string
		ask   bool
		want  error
	}{
		{"asked and offered", greeting, true, nil},
		{"not asked", greeting, false, ErrNoOOB},
		{"not offered", noOOB, true, ErrNoOOB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan fakeReq, 1)
			m := newFakeMonitor(t, tc.greet, func(r fakeReq) []string {
				got <- r
				return []string{`{"return": {}, "id": ` + string(r.ID) + `}`}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, m.path, Options{OOB: tc.ask})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.ExecuteOOB(ctx, "migrate-recover", Args{"uri": "tcp:127.0.0.1:1"}, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("ExecuteOOB = %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				return
			}
			if r := <-got; r.ExecOOB != "migrate-recover" || r.Execute != "" || !strings.Contains(string(r.Arguments), "tcp:127.0.0.1:1") {
				t.Fatalf("the monitor got %+v, want exec-oob migrate-recover", r)
			}
		})
	}
}

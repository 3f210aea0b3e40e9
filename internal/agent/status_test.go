package agent

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/vpool/vpool/internal/api"
)

// A status report the server accepts is no error when the caller wants
// no answer back. Before, the nil *model.VM reached the decoder and every
// accepted report of an orphan read as failed: test/chaos logged "VM on
// this host is not assigned to it" with "decode response: json:
// Unmarshal(nil *model.VM)".
func TestAcceptedStatusWithoutAnswerIsNoError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"project":"p","name":"web"}`))
	}))
	defer srv.Close()
	a := &Agent{client: &transport{base: srv.URL, http: srv.Client()}}
	rep := api.VMReport{Project: "p", Name: "web", Phase: "running"}
	if err := a.putStatus(context.Background(), rep, nil); err != nil {
		t.Fatalf("an accepted report without an answer wanted: %v", err)
	}
}

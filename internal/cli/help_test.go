package cli

import (
	"strings"
	"testing"
)

// The help a newcomer reads names the dashboard, shell completion, images
// and the project in use.
func TestRootHelp(t *testing.T) {
	res := invocation{}.run(t, "--help")
	for _, want := range []string{"completion ", "/ui/", "image ", "project use"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("vpool --help lacks %q:\n%s", want, res.stdout)
		}
	}
}

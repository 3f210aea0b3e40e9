package simulate

import (
	"os"
	"path/filepath"
	"testing"
)

// planetLabDir finds the shared PlanetLab traces: $VPOOL_PLANETLAB, or
// ../shared/data/planetlab above the repository.
func planetLabDir(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv("VPOOL_PLANETLAB"); d != "" {
		return d
	}
	dir, _ := os.Getwd()
	for {
		c := filepath.Join(dir, "..", "shared", "data", "planetlab")
		if st, err := os.Stat(c); err == nil && st.IsDir() {
			return c
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "/work/shared/data/planetlab"
		}
		dir = parent
	}
}

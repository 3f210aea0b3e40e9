package scale

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// envProfile names a folder: with it set, every server serves Go's
// profiles (VPOOL_PPROF) and the measurement windows save each server's
// CPU profile and heap there (docs/scale.md's profiles).
const envProfile = "VPOOL_SCALE_PROFILE"

// envTrace, set beside envProfile, also saves a 10 s execution trace of
// every server at the window's start.
const envTrace = "VPOOL_SCALE_EXECTRACE"

// startProfiles takes a CPU profile and the allocations of every live
// server over d, in the background; the returned func waits for them and
// saves each heap.
func (st *stack) startProfiles(name string, d time.Duration) func() {
	dir := os.Getenv(envProfile)
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		st.tb.Logf("profile: %v", err)
		return func() {}
	}
	tag := strings.NewReplacer("/", "-", "=", "").Replace(name)
	done := make(chan struct{})
	n := 0
	for _, s := range st.live() {
		if s.pprof == "" {
			continue
		}
		n++
		go func() {
			defer func() { done <- struct{}{} }()
			st.saveProfile(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", s.pprof, int(d.Seconds())),
				filepath.Join(dir, tag+"-"+s.name+".cpu"))
		}()
		n++
		go func() {
			// what was allocated over the window (a delta, not since the
			// start): what the collector's work comes from
			defer func() { done <- struct{}{} }()
			st.saveProfile(fmt.Sprintf("http://%s/debug/pprof/allocs?seconds=%d", s.pprof, int(d.Seconds())),
				filepath.Join(dir, tag+"-"+s.name+".allocs"))
		}()
		if os.Getenv(envTrace) != "" {
			n++
			go func() {
				// an execution trace of the window's first seconds: where
				// requests waited (go tool trace -pprof=sched)
				defer func() { done <- struct{}{} }()
				st.saveProfile(fmt.Sprintf("http://%s/debug/pprof/trace?seconds=%d", s.pprof, int(min(d, 10*time.Second).Seconds())),
					filepath.Join(dir, tag+"-"+s.name+".trace"))
			}()
		}
	}
	return func() {
		for range n {
			<-done
		}
		for _, s := range st.live() {
			if s.pprof == "" {
				continue
			}
			base := filepath.Join(dir, tag+"-"+s.name)
			st.saveProfile("http://"+s.pprof+"/debug/pprof/heap", base+".heap")
			// the heap's text form ends with runtime.MemStats (heap in
			// use, idle, released; stacks; GC metadata)
			st.saveProfile("http://"+s.pprof+"/debug/pprof/heap?debug=1", base+".heap.txt")
			st.saveProfile("http://"+s.pprof+"/debug/pprof/goroutine?debug=1", base+".goroutines.txt")
			// the resident set by kind of mapping (anon, file-backed)
			for _, f := range []string{"smaps_rollup", "smaps"} {
				if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", s.cmd.Process.Pid, f)); err == nil {
					_ = os.WriteFile(base+"."+f, b, 0o644)
				}
			}
		}
	}
}

func (st *stack) saveProfile(url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		st.tb.Logf("profile %s: %v", url, err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		st.tb.Logf("profile: %v", err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		st.tb.Logf("profile %s: %v", url, err)
	}
}

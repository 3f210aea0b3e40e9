package agent_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vpool/vpool/internal/api"
	"github.com/vpool/vpool/internal/hypervisor/sim"
)

// An agent without virtual networks holds exactly the long polls
// api.AgentLongPolls names: the fleet simulator holds that list too, so
// a new poll here that the list misses would leave the scale benchmarks
// measuring a cheaper host than an agent.
func TestAgentLongPollsAsListed(t *testing.T) {
	fs := newFakeServer(t)
	d := sim.MustHost(sim.Config{Name: "h1"}).Driver()
	startAgent(t, fs, t.TempDir(), fs.token, d)
	var got []string
	eventuallyFor(t, "every long poll seen", 10*time.Second, func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		got = got[:0]
		for p := range fs.polls {
			got = append(got, strings.TrimPrefix(p, api.AgentPrefix+"/"))
		}
		slices.Sort(got)
		return len(got) >= len(api.AgentLongPolls)
	}, func() string { return strings.Join(got, ", ") })
	time.Sleep(300 * time.Millisecond) // any other poll would be out by now
	fs.mu.Lock()
	got = got[:0]
	for p := range fs.polls {
		got = append(got, strings.TrimPrefix(p, api.AgentPrefix+"/"))
	}
	fs.mu.Unlock()
	slices.Sort(got)
	if !slices.Equal(got, api.AgentLongPolls) {
		t.Fatalf("the agent long-polls %v, api.AgentLongPolls says %v", got, api.AgentLongPolls)
	}
}

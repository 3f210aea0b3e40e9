package fleet

import (
	"container/heap"
	"slices"
	"sync"
	"time"
)

// Stats is what a fleet measured since the last ResetStats.
type Stats struct {
	Beats, BeatErrors     int
	Reports, ReportErrors int
	PollErrors            int
	// SidePolls and SidePollErrors count the answers of the polls a real
	// agent holds beside its assignments (Config.OnlyAssignments: none).
	SidePolls, SidePollErrors int
	// BeatP50 and BeatP99 are heartbeat round trips.
	BeatP50, BeatP99 time.Duration
	// Interval and IntervalMax are the median and the longest of the
	// intervals the servers last told the hosts (now, not over the
	// window; 0: none told yet).
	Interval, IntervalMax time.Duration
	// InFlightMax is the most beats that were out at once (sent, not
	// answered): nothing caps it unless Config.Workers does.
	InFlightMax int
	Since       time.Time
}

type stats struct {
	mu      sync.Mutex
	beats   []time.Duration
	s       Stats
	started bool
}

func (s *stats) beat(d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	if err != nil {
		s.s.BeatErrors++
		return
	}
	s.s.Beats++
	s.beats = append(s.beats, d)
}

// inFlight notes n beats out at once.
func (s *stats) inFlight(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.s.InFlightMax = max(s.s.InFlightMax, int(n))
}

func (s *stats) report(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.s.Reports++
	if err != nil {
		s.s.ReportErrors++
	}
}

func (s *stats) pollFailed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.s.PollErrors++
}

func (s *stats) sidePoll(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.s.SidePolls++
	if err != nil {
		s.s.SidePollErrors++
	}
}

func (s *stats) init() {
	if !s.started {
		s.started, s.s.Since = true, time.Now()
	}
}

// Stats returns the counts and heartbeat latencies since the last reset.
func (f *Fleet) Stats() Stats {
	s := &f.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.s
	d := slices.Clone(s.beats)
	slices.Sort(d)
	if n := len(d); n > 0 {
		out.BeatP50, out.BeatP99 = d[n/2], d[min(n-1, n*99/100)]
	}
	out.Interval, out.IntervalMax = f.intervals()
	return out
}

// intervals returns the median and the longest interval the hosts were
// told.
func (f *Fleet) intervals() (time.Duration, time.Duration) {
	var iv []time.Duration
	for _, h := range f.hosts {
		h.mu.Lock()
		if h.interval > 0 {
			iv = append(iv, h.interval)
		}
		h.mu.Unlock()
	}
	if len(iv) == 0 {
		return 0, 0
	}
	slices.Sort(iv)
	return iv[len(iv)/2], iv[len(iv)-1]
}

// ResetStats starts a new measurement window.
func (f *Fleet) ResetStats() {
	s := &f.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beats, s.s = nil, Stats{Since: time.Now()}
	s.started = true
}

// beatQueue orders hosts by the time their next beat is due.
type beatQueue struct{ items beatHeap }

type beatItem struct {
	h  *host
	at time.Time
}

type beatHeap []beatItem

func (q beatHeap) Len() int           { return len(q) }
func (q beatHeap) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q beatHeap) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *beatHeap) Push(x any)        { *q = append(*q, x.(beatItem)) }
func (q *beatHeap) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

func newBeatQueue() *beatQueue { return &beatQueue{} }

func (q *beatQueue) push(h *host, at time.Time) { heap.Push(&q.items, beatItem{h, at}) }

// peek returns the next due host; a queue of no hosts is due in an hour.
func (q *beatQueue) peek() (*host, time.Time) {
	if len(q.items) == 0 {
		return nil, time.Now().Add(time.Hour)
	}
	return q.items[0].h, q.items[0].at
}

func (q *beatQueue) pop() { heap.Pop(&q.items) }

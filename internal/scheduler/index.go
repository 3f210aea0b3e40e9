package scheduler

// freeIndex keeps the schedulable hosts bucketed by free allocatable
// capacity (hostRec.indexKey: the scarcer of memory and CPU, in bytes), so
// that a search can start at the first bucket that can hold the request
// (best fit, for binpack) or at the top (worst fit, for spread) and skip
// every host that is too full in O(log n).
//
// Buckets are width bytes wide; the last bucket also holds everything
// above it. A Fenwick tree over bucket sizes counts the skipped hosts for
// the explanation without visiting them.
type freeIndex struct {
	width    int64
	buckets  [][]int32
	bucketOf []int32 // per host: its bucket, -1 when not indexed
	pos      []int32 // per host: its position in the bucket
	nonEmpty bitset  // per bucket
	fen      []int32 // Fenwick tree over bucket sizes, 1-based
	size     int
}

const (
	minBucketWidth = 256 << 20 // 256MiB
	maxBuckets     = 4096
)

func newFreeIndex(maxFree int64, hosts int) *freeIndex {
	width := int64(minBucketWidth)
	if w := maxFree/maxBuckets + 1; w > width {
		width = (w + minBucketWidth - 1) / minBucketWidth * minBucketWidth
	}
	nb := int(maxFree/width) + 2
	x := &freeIndex{
		width:    width,
		buckets:  make([][]int32, nb),
		bucketOf: make([]int32, hosts),
		pos:      make([]int32, hosts),
		nonEmpty: newBitset(nb),
		fen:      make([]int32, nb+1),
	}
	for i := range x.bucketOf {
		x.bucketOf[i] = -1
	}
	return x
}

func (x *freeIndex) bucketFor(free int64) int {
	if free <= 0 {
		return 0
	}
	b := free / x.width
	if b >= int64(len(x.buckets)) {
		return len(x.buckets) - 1
	}
	return int(b)
}

func (x *freeIndex) fenAdd(b int, d int32) {
	for i := b + 1; i < len(x.fen); i += i & -i {
		x.fen[i] += d
	}
}

// below counts the hosts in buckets < b.
func (x *freeIndex) below(b int) int {
	n := int32(0)
	if b > len(x.buckets) {
		b = len(x.buckets)
	}
	for i := b; i > 0; i -= i & -i {
		n += x.fen[i]
	}
	return int(n)
}

func (x *freeIndex) grow(hosts int) {
	for len(x.bucketOf) < hosts {
		x.bucketOf = append(x.bucketOf, -1)
		x.pos = append(x.pos, 0)
	}
}

func (x *freeIndex) add(h int32, free int64) {
	b := x.bucketFor(free)
	x.bucketOf[h] = int32(b)
	x.pos[h] = int32(len(x.buckets[b]))
	x.buckets[b] = append(x.buckets[b], h)
	x.nonEmpty.set(int32(b))
	x.fenAdd(b, 1)
	x.size++
}

func (x *freeIndex) remove(h int32) {
	b := x.bucketOf[h]
	if b < 0 {
		return
	}
	list := x.buckets[b]
	p := x.pos[h]
	last := list[len(list)-1]
	list[p] = last
	x.pos[last] = p
	x.buckets[b] = list[:len(list)-1]
	if len(x.buckets[b]) == 0 {
		x.nonEmpty.clear(b)
	}
	x.bucketOf[h] = -1
	x.fenAdd(int(b), -1)
	x.size--
}

// update moves h to the bucket of free; it adds h when it was not indexed.
func (x *freeIndex) update(h int32, free int64) {
	if b := x.bucketOf[h]; b >= 0 && int(b) == x.bucketFor(free) {
		return
	}
	x.remove(h)
	x.add(h, free)
}

func (x *freeIndex) clone() *freeIndex {
	c := *x
	c.buckets = make([][]int32, len(x.buckets))
	for i, l := range x.buckets {
		if len(l) > 0 {
			c.buckets[i] = append([]int32(nil), l...)
		}
	}
	c.bucketOf = append([]int32(nil), x.bucketOf...)
	c.pos = append([]int32(nil), x.pos...)
	c.nonEmpty = x.nonEmpty.clone()
	c.fen = append([]int32(nil), x.fen...)
	return &c
}

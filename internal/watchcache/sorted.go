package watchcache

import (
	"sort"
	"strings"
)

// chunkMax is the most items one chunk of a sorted holds; an insert or
// delete moves at most this many pointers.
const chunkMax = 512

// sorted is an ordered map from key to *Item: a list of sorted chunks,
// so that an insert costs a binary search and a copy of one chunk
// (not of all 100,000 entries), and a page is a walk from a key.
type sorted struct {
	chunks [][]*Item
	n      int
}

// find returns the chunk that holds key or would take it, and the
// position in it.
func (s *sorted) find(key string) (int, int) {
	if len(s.chunks) == 0 {
		return 0, 0
	}
	// the first chunk whose last key is >= key
	c := sort.Search(len(s.chunks), func(i int) bool {
		ch := s.chunks[i]
		return ch[len(ch)-1].Key >= key
	})
	if c == len(s.chunks) {
		c-- // after every key: append to the last chunk
		return c, len(s.chunks[c])
	}
	ch := s.chunks[c]
	return c, sort.Search(len(ch), func(i int) bool { return ch[i].Key >= key })
}

func (s *sorted) get(key string) *Item {
	c, i := s.find(key)
	if c < len(s.chunks) && i < len(s.chunks[c]) && s.chunks[c][i].Key == key {
		return s.chunks[c][i]
	}
	return nil
}

// put stores it and returns the item it replaced (nil when new).
func (s *sorted) put(it *Item) *Item {
	if len(s.chunks) == 0 {
		s.chunks = [][]*Item{{it}}
		s.n = 1
		return nil
	}
	c, i := s.find(it.Key)
	ch := s.chunks[c]
	if i < len(ch) && ch[i].Key == it.Key {
		old := ch[i]
		ch[i] = it
		return old
	}
	ch = append(ch, nil)
	copy(ch[i+1:], ch[i:])
	ch[i] = it
	s.n++
	if len(ch) <= chunkMax {
		s.chunks[c] = ch
		return nil
	}
	half := len(ch) / 2
	left := append(make([]*Item, 0, chunkMax), ch[:half]...)
	right := append(make([]*Item, 0, chunkMax), ch[half:]...)
	s.chunks = append(s.chunks, nil)
	copy(s.chunks[c+2:], s.chunks[c+1:])
	s.chunks[c], s.chunks[c+1] = left, right
	return nil
}

// del removes key and returns the item it held (nil when absent).
func (s *sorted) del(key string) *Item {
	c, i := s.find(key)
	if c >= len(s.chunks) || i >= len(s.chunks[c]) || s.chunks[c][i].Key != key {
		return nil
	}
	ch := s.chunks[c]
	old := ch[i]
	copy(ch[i:], ch[i+1:])
	ch[len(ch)-1] = nil
	ch = ch[:len(ch)-1]
	s.n--
	if len(ch) == 0 {
		s.chunks = append(s.chunks[:c], s.chunks[c+1:]...)
	} else {
		s.chunks[c] = ch
	}
	return old
}

// ascend calls fn on the items whose key has prefix and is above after
// (every item with the prefix when after is ""), in key order, until fn
// returns false.
func (s *sorted) ascend(prefix, after string, fn func(*Item) bool) {
	start := prefix
	if after >= start {
		start = after + "\x00"
	}
	c, i := s.find(start)
	for ; c < len(s.chunks); c, i = c+1, 0 {
		for _, it := range s.chunks[c][i:] {
			if !strings.HasPrefix(it.Key, prefix) || !fn(it) {
				return
			}
		}
	}
}

func (s *sorted) len() int { return s.n }

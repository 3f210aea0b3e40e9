package scheduler

import "math/bits"

// bitset is a fixed-universe set of small non-negative integers (host
// indexes, bucket numbers). Label selectors are answered by AND-ing them.
type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }

func (b bitset) has(i int32) bool {
	w := int(i >> 6)
	return w < len(b) && b[w]&(1<<(uint(i)&63)) != 0
}

func (b *bitset) set(i int32) {
	w := int(i >> 6)
	for w >= len(*b) {
		*b = append(*b, 0)
	}
	(*b)[w] |= 1 << (uint(i) & 63)
}

func (b bitset) clear(i int32) {
	if w := int(i >> 6); w < len(b) {
		b[w] &^= 1 << (uint(i) & 63)
	}
}

func (b bitset) count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// next returns the smallest member ≥ i, or -1.
func (b bitset) next(i int) int {
	if i < 0 {
		i = 0
	}
	w := i >> 6
	if w >= len(b) {
		return -1
	}
	word := b[w] >> (uint(i) & 63)
	if word != 0 {
		return i + bits.TrailingZeros64(word)
	}
	for w++; w < len(b); w++ {
		if b[w] != 0 {
			return w<<6 + bits.TrailingZeros64(b[w])
		}
	}
	return -1
}

// prev returns the largest member ≤ i, or -1.
func (b bitset) prev(i int) int {
	if i < 0 {
		return -1
	}
	w := i >> 6
	if w >= len(b) {
		w = len(b) - 1
		i = w<<6 + 63
	}
	if w < 0 {
		return -1
	}
	word := b[w] << (63 - uint(i)&63)
	if word != 0 {
		return i - bits.LeadingZeros64(word)
	}
	for w--; w >= 0; w-- {
		if b[w] != 0 {
			return w<<6 + 63 - bits.LeadingZeros64(b[w])
		}
	}
	return -1
}

// andInto sets dst = a AND b over len(dst) words (missing words are zero).
func andInto(dst, a, b bitset) {
	for i := range dst {
		var x, y uint64
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		dst[i] = x & y
	}
}

func (b bitset) clone() bitset { return append(bitset(nil), b...) }

package l4

import (
	"hash/fnv"
)

// maglevTable builds a Maglev lookup table (Eisenbud et al., "Maglev: A
// Fast and Reliable Software Network Load Balancer", NSDI 2016) of size m
// (a prime) for backends, which the caller sorts so that the same set
// always gives the same table. Each entry is an index into backends.
// Removing one backend moves only the entries it held (and a few more),
// so most flows that a restart would re-balance keep their member.
func maglevTable(backends []string, m int) []int {
	n := len(backends)
	if n == 0 || m < 2 {
		return nil
	}
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	for i, b := range backends {
		offset[i] = hash64("maglev offset "+b) % uint64(m)
		skip[i] = hash64("maglev skip "+b)%uint64(m-1) + 1
	}
	table := make([]int, m)
	for i := range table {
		table[i] = -1
	}
	for filled := 0; ; {
		for i := range n {
			c := (offset[i] + next[i]*skip[i]) % uint64(m)
			for table[c] >= 0 {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % uint64(m)
			}
			table[c] = i
			next[i]++
			filled++
			if filled == m {
				return table
			}
		}
	}
}

// hash64 is FNV-1a with a final avalanche step, so that addresses that
// differ in their last byte land far apart.
func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

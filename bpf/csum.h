/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Incremental Internet checksum updates (RFC 1624). Values are summed as
 * they lie in memory (network order); one's complement sums do not depend
 * on byte order as long as everything is summed the same way. A delta is
 * accumulated in 64 bits and folded once. */
#ifndef EDGEPROXY_CSUM_H
#define EDGEPROXY_CSUM_H

#include "common.h"

/* Folds a sum below 2^40 (every sum here is a few dozen terms of at
 * most 33 bits) to 16 bits: after the first fold it is below 2^24 + 2^16,
 * after the second below 2^16 + 2^9, and the third leaves at most 0xffff.
 * Three 16-bit folds are fewer instructions than 32-bit folds first. */
static __always_inline __u16 csum_fold64(__u64 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* Delta for a 32-bit word changing from old to new. */
static __always_inline __u64 csum_delta32(__be32 old, __be32 new)
{
	return (__u64)(__u32)~old + (__u64)new;
}

/* Delta for a 16-bit word changing from old to new. */
static __always_inline __u64 csum_delta16(__be16 old, __be16 new)
{
	return (__u64)(__u16)~old + (__u64)new;
}

static __always_inline __u64 csum_delta_addr(const struct addr *old,
					     const struct addr *new, __u8 family)
{
	__u64 d = csum_delta32(old->w[0], new->w[0]);

	if (family == 6) {
		d += csum_delta32(old->w[1], new->w[1]);
		d += csum_delta32(old->w[2], new->w[2]);
		d += csum_delta32(old->w[3], new->w[3]);
	}
	return d;
}

/* The checksum field after applying delta: ~(~HC + delta). */
static __always_inline __u16 csum_apply(__u16 check, __u64 delta)
{
	return (__u16)~csum_fold64((__u64)(__u16)~check + delta);
}

/* Plain sum of n 16-bit words (n bounded by the caller), for small
 * fixed-size headers that are rebuilt rather than patched. */
static __always_inline __u64 csum_words(const __u16 *p, int n)
{
	__u64 s = 0;

	for (int i = 0; i < n; i++)
		s += p[i];
	return s;
}

#endif

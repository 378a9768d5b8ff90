/* jhash.h: Bob Jenkins' lookup3 hash (the kernel's jhash), used for the flow hash.
 * pkg/lb/xdp/flowhash.go implements the same function; keep them in step. */
#ifndef L4LB_JHASH_H
#define L4LB_JHASH_H

#include <linux/types.h>

#define JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> (32 - s));
}

#define __jhash_mix(a, b, c)            \
	{                               \
		a -= c; a ^= rol32(c, 4);  c += b; \
		b -= a; b ^= rol32(a, 6);  a += c; \
		c -= b; c ^= rol32(b, 8);  b += a; \
		a -= c; a ^= rol32(c, 16); c += b; \
		b -= a; b ^= rol32(a, 19); a += c; \
		c -= b; c ^= rol32(b, 4);  b += a; \
	}

#define __jhash_final(a, b, c)           \
	{                                \
		c ^= b; c -= rol32(b, 14); \
		a ^= c; a -= rol32(c, 11); \
		b ^= a; b -= rol32(a, 25); \
		c ^= b; c -= rol32(b, 16); \
		a ^= c; a -= rol32(c, 4);  \
		b ^= a; b -= rol32(a, 14); \
		c ^= b; c -= rol32(b, 24); \
	}

/* The *64 variants return b << 32 | c after the final mix: the 32-bit hash (c) and 32 more
 * bits of the same state, as lookup3's hashlittle2 does. */
static __always_inline __u64 jhash_3words64(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	a += JHASH_INITVAL + (3 << 2) + initval;
	b += JHASH_INITVAL + (3 << 2) + initval;
	c += JHASH_INITVAL + (3 << 2) + initval;
	__jhash_final(a, b, c);
	return ((__u64)b << 32) | c;
}

static __always_inline __u32 jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	return (__u32)jhash_3words64(a, b, c, initval);
}

/* jhash of exactly nine 32-bit words (IPv6 src, dst, ports). */
static __always_inline __u64 jhash_9words64(const __u32 *k, __u32 initval)
{
	__u32 a, b, c;

	a = b = c = JHASH_INITVAL + (9 << 2) + initval;
	a += k[0]; b += k[1]; c += k[2];
	__jhash_mix(a, b, c);
	a += k[3]; b += k[4]; c += k[5];
	__jhash_mix(a, b, c);
	a += k[6]; b += k[7]; c += k[8];
	__jhash_final(a, b, c);
	return ((__u64)b << 32) | c;
}

static __always_inline __u32 jhash_9words(const __u32 *k, __u32 initval)
{
	return (__u32)jhash_9words64(k, initval);
}

#endif

/* csum.h: Internet checksum of an IPv4 header we build (20 bytes, no options). */
#ifndef L4LB_CSUM_H
#define L4LB_CSUM_H

#include <linux/types.h>

static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* hdr must point at 20 readable bytes whose checksum field is zero. */
static __always_inline __u16 ipv4_hdr_csum(const __u16 *hdr)
{
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < IPV4_HDR_LEN / 2; i++)
		sum += hdr[i];
	return csum_fold32(sum);
}

#endif

/* vip.h: finding the VIP a destination belongs to. The XDP fast path and the socket LB
 * both go through vip_find(), so a VIP matches the same way in both. */
#ifndef L4LB_VIP_H
#define L4LB_VIP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_structs.h"
#include "lb_maps.h"

/* vip_find returns the VIP for addr (16 bytes, IPv4 in the first 4), port (network
 * order), protocol and family: the VIP of that port, else the address's any-port VIP. */
static __always_inline struct vip_meta *vip_find(const __u8 *addr, __u16 port, __u8 proto, __u8 family)
{
	struct vip_key k = {};
	struct vip_meta *m;

	__builtin_memcpy(k.addr, addr, 16);
	k.port = port;
	k.proto = proto;
	k.family = family;
	m = bpf_map_lookup_elem(&vips, &k);
	if (m)
		return m;
	k.port = 0;
	return bpf_map_lookup_elem(&vips, &k);
}

#endif

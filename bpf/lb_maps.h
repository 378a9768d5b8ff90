/* lb_maps.h: the maps every program that picks a backend shares (the XDP fast path and
 * the connect-time socket LB): VIPs, backends and Maglev rings. All are pinned by name
 * under the bpffs directory the loader is given, so a restarted daemon adopts them; the
 * socket LB loads with the XDP data plane's own map objects in their place. */
#ifndef L4LB_MAPS_H
#define L4LB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lb_consts.h"
#include "lb_structs.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vips SEC(".maps");

/* Every VIP's Maglev rings, flat: each VIP owns two ranges of blocks (the halves of
 * ring_sel), one read, one written. Sized by the loader. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RING_BLOCKS);
	__type(key, __u32);
	__type(value, struct ring_block);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VIPS);
	__type(key, __u32);
	__type(value, struct ring_select);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} ring_sel SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} backends SEC(".maps");

#endif

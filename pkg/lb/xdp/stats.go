package xdp

// statNames names every global counter of bpf/lb_structs.h enum stat_id. The names are
// stable: they appear in metrics and in `l4lb status`.
var statNames = [...]string{
	xdplbStatIdSTAT_TX_ENCAP4:         "tx_encap4",
	xdplbStatIdSTAT_TX_ENCAP6:         "tx_encap6",
	xdplbStatIdSTAT_CT_HIT:            "ct_hit",
	xdplbStatIdSTAT_CT_MISS:           "ct_miss",
	xdplbStatIdSTAT_CT_REHASH:         "ct_rehash",
	xdplbStatIdSTAT_CT_UDP_EXPIRED:    "ct_udp_expired",
	xdplbStatIdSTAT_CT_SKIP_RST:       "ct_skip_rst",
	xdplbStatIdSTAT_ICMP_TOO_BIG_FWD:  "icmp_too_big_fwd",
	xdplbStatIdSTAT_PASS_NON_IP:       "pass_non_ip",
	xdplbStatIdSTAT_PASS_NON_VIP:      "pass_non_vip",
	xdplbStatIdSTAT_PASS_OTHER_PROTO:  "pass_other_proto",
	xdplbStatIdSTAT_PASS_QINQ:         "pass_qinq",
	xdplbStatIdSTAT_DROP_TRUNC_ETH:    "drop_trunc_eth",
	xdplbStatIdSTAT_DROP_TRUNC_IP:     "drop_trunc_ip",
	xdplbStatIdSTAT_DROP_BAD_IP:       "drop_bad_ip",
	xdplbStatIdSTAT_DROP_TRUNC_L4:     "drop_trunc_l4",
	xdplbStatIdSTAT_DROP_FRAGMENT:     "drop_fragment",
	xdplbStatIdSTAT_DROP_IPV6EXT:      "drop_ipv6_ext",
	xdplbStatIdSTAT_DROP_NO_BACKEND:   "drop_no_backend",
	xdplbStatIdSTAT_DROP_FAMILY:       "drop_family",
	xdplbStatIdSTAT_DROP_NO_SOURCE:    "drop_no_source",
	xdplbStatIdSTAT_DROP_TOO_BIG:      "drop_too_big",
	xdplbStatIdSTAT_DROP_ICMP_BAD:     "drop_icmp_bad",
	xdplbStatIdSTAT_DROP_ADJUST:       "drop_adjust",
	xdplbStatIdSTAT_DROP_DENY:         "drop_deny",
	xdplbStatIdSTAT_DROP_NOT_ALLOWED:  "drop_not_allowed",
	xdplbStatIdSTAT_DROP_TCP_FLAGS:    "drop_tcp_flags",
	xdplbStatIdSTAT_DROP_UDP_LEN:      "drop_udp_len",
	xdplbStatIdSTAT_GUARD_UNTRACKED:   "guard_untracked",
	xdplbStatIdSTAT_GUARD_DROP:        "guard_drop",
	xdplbStatIdSTAT_TX_ICMP_TOO_BIG:   "tx_icmp_too_big",
	xdplbStatIdSTAT_CT_EVICTED:        "ct_evicted",
	xdplbStatIdSTAT_CT_NOT_MEMBER:     "ct_not_member",
	xdplbStatIdSTAT_DROP_TOO_BIG_RATE: "drop_too_big_rate",
}

// StatNames lists the data plane's global counter names in enum order.
func StatNames() []string { return append([]string(nil), statNames[:]...) }

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/daemon"
)

// newFlowsCmd is `l4lb flows`: the XDP conntrack table's summary, or with --flow what it
// holds for one flow.
func newFlowsCmd(f *clientFlags) *cobra.Command {
	var lookup bool
	cmd := &cobra.Command{
		Use:   "flows [--flow PROTO SRC DST]",
		Short: "Show the XDP conntrack table: a summary, or what it holds for one flow",
		Long: `Show the XDP data plane's conntrack table.

With no argument: entries and capacity, buckets by ways in use, entries per backend and
per VIP, and the ct_* counters. With --flow PROTO SRC DST (tcp or udp, ADDR:PORT, IPv6 as
[ADDR]:PORT, as the client's packets reach the VIP): whether the flow is tracked, the
buckets searched, its backend, marks and age, and what its next packet gets.

Conntrack keeps a 64-bit digest of each flow's 5-tuple, not the tuple: flows cannot be
listed, only looked up one by one. Both forms only read the table.`,
		Example: `  l4lb flows
  l4lb flows --flow tcp 198.51.100.7:40000 203.0.113.10:80
  l4lb flows --flow udp '[2001:db8::7]:5300' '[2001:db8::10]:53' -o json`,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case lookup && len(args) != 3:
				return fmt.Errorf("--flow takes PROTO SRC DST (e.g. tcp 198.51.100.7:40000 203.0.113.10:80), got %d argument(s)", len(args))
			case !lookup && len(args) > 0:
				return fmt.Errorf("unexpected arguments %q: to look a flow up, use --flow PROTO SRC DST", args)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			if !lookup {
				raw, err := f.do(http.MethodGet, admin.FlowsPath(nil), nil)
				if err != nil {
					return err
				}
				var v daemon.FlowsView
				if err := json.Unmarshal(raw, &v); err != nil {
					return fmt.Errorf("admin api: %w", err)
				}
				return f.print(out, raw, func() error { return printFlowsSummary(out, v) })
			}
			q, err := admin.ParseFlow(args[0], args[1], args[2])
			if err != nil {
				return fmt.Errorf("--flow: %s", strings.TrimPrefix(err.Error(), admin.ErrBadRequest.Error()+": "))
			}
			raw, err := f.do(http.MethodGet, admin.FlowsPath(&q), nil)
			if err != nil {
				return err
			}
			var v daemon.FlowLookupView
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("admin api: %w", err)
			}
			return f.print(out, raw, func() error { return printFlowLookup(out, v) })
		},
	}
	cmd.Flags().BoolVar(&lookup, "flow", false, "look up one flow, given as the arguments PROTO SRC DST")
	return cmd
}

func printFlowLookup(out io.Writer, v daemon.FlowLookupView) error {
	w := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "flow\t%s %s -> %s\n", v.Proto, v.Src, v.Dst)
	if v.VIP != nil {
		fmt.Fprintf(w, "vip\t%s (id %d)\n", vipLabel(v.VIP.Name, v.VIP.Key), v.VIP.ID)
	} else {
		fmt.Fprintf(w, "vip\tnone\n")
	}
	fmt.Fprintf(w, "digest\t%s\n", v.Digest)
	fmt.Fprintf(w, "buckets\t%s\n", searched(v))
	if v.Entry == nil {
		fmt.Fprintf(w, "tracked\tno\n")
	} else {
		e := v.Entry
		fmt.Fprintf(w, "tracked\tyes: bucket %d way %d\n", e.Bucket, e.Way)
		be := fmt.Sprintf("%d %s", e.Backend.ID, e.Backend.Address)
		if !e.Backend.Exists {
			be = fmt.Sprintf("%d (no such backend now)", e.Backend.ID)
		}
		fmt.Fprintf(w, "backend\t%s, %s\n", be, membership(v))
		m := strings.Join(e.Marks, " ")
		if m == "" {
			m = "none (one packet: never found again)"
		}
		fmt.Fprintf(w, "marks\t%s, generation %d (state %s)\n", m, e.Generation, e.State)
		age := e.Age
		if e.Expired {
			age += ", past udp_timeout"
		}
		fmt.Fprintf(w, "age\t%s\n", age)
	}
	if v.Ring != nil {
		ring := fmt.Sprintf("backend %d %s", v.Ring.ID, v.Ring.Address)
		if !v.Ring.Exists {
			ring = fmt.Sprintf("backend %d (no such backend)", v.Ring.ID)
		}
		fmt.Fprintf(w, "ring now\t%s\n", ring)
	}
	fmt.Fprintf(w, "next packet\t%s\n", v.NextPacket)
	if v.SYN != "" {
		fmt.Fprintf(w, "syn\t%s\n", v.SYN)
	}
	return w.Flush()
}

// searched says which buckets a packet of the flow reads.
func searched(v daemon.FlowLookupView) string {
	b := v.Buckets
	switch {
	case b[0] == b[1]:
		return fmt.Sprintf("%d (both halves of the digest name it), searched", b[0])
	case v.Searched == 1:
		return fmt.Sprintf("%d and %d, searched the first only (it holds the flow)", b[0], b[1])
	case v.Entry != nil:
		return fmt.Sprintf("%d and %d, searched both (the second holds the flow)", b[0], b[1])
	}
	s := fmt.Sprintf("%d and %d, searched both", b[0], b[1])
	if v.BusyWays > 0 {
		s += fmt.Sprintf(" (%d way(s) being written as they were read)", v.BusyWays)
	}
	return s
}

func membership(v daemon.FlowLookupView) string {
	switch {
	case v.VIP == nil:
		return "no vip to be a member of"
	case v.Entry.Member:
		return "a member of the vip"
	case v.Entry.MembersChecked:
		return "no longer a member of the vip"
	}
	return "not a member of the vip (not checked yet: vip_backends is being refilled after an upgrade)"
}

func vipLabel(name, key string) string {
	if name == "" {
		return key
	}
	return name + " " + key
}

func printFlowsSummary(out io.Writer, v daemon.FlowsView) error {
	w := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(w, "entries\t%d of %d (%.2f%%), %d buckets of 4 ways, walked in %.1f ms\n", v.Entries, v.Capacity, v.FillPercent, v.Buckets, v.WalkMS)
	var fill []string
	for n, c := range v.BucketFill {
		fill = append(fill, fmt.Sprintf("%d: %d", n, c))
	}
	fmt.Fprintf(w, "buckets by ways used\t%s\n", strings.Join(fill, "  "))
	fmt.Fprintf(w, "marks\testablished %d (referenced %d), one packet %d\n", v.Established, v.Referenced, v.OnePacket)
	fmt.Fprintf(w, "udp\t%d (entries with a time: tcp entries have none), %d idle past udp_timeout\n", v.UDP, v.UDPExpired)
	if v.BusyWays > 0 {
		fmt.Fprintf(w, "busy\t%d way(s) being written as they were read\n", v.BusyWays)
	}
	var cs []string
	for _, k := range slices.Sorted(maps.Keys(v.Counters)) {
		cs = append(cs, fmt.Sprintf("%s %d", k, v.Counters[k]))
	}
	fmt.Fprintf(w, "counters\t%s\n", strings.Join(cs, "  "))
	fmt.Fprintln(w)

	shared := false
	fmt.Fprintln(w, "VIP\tNAME\tID\tENTRIES")
	for _, vip := range v.VIPs {
		n := fmt.Sprint(vip.Own)
		if !vip.Exact {
			n = fmt.Sprintf("%d..%d *", vip.Own, vip.Own+vip.Shared)
			shared = true
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", vip.Key, orDash(vip.Name), vip.ID, n)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "BACKEND\tADDRESS\tENTRIES\tVIPS")
	for _, b := range v.Backends {
		addr := b.Address
		if !b.Exists {
			addr = "(deleted)"
		}
		vips := orDash(strings.Join(b.VIPs, ", "))
		if b.Shared {
			vips += " *"
		}
		fmt.Fprintf(w, "%d\t%s\t%d\t%s\n", b.ID, addr, b.Entries, vips)
	}
	if shared {
		fmt.Fprintln(w, "* a backend shared by VIPs: its entries count for each of them (an entry, a digest of the 5-tuple, does not say its VIP)")
	}
	if v.NoVIP > 0 {
		fmt.Fprintf(w, "entries naming a backend no VIP has: %d (stale: re-hashed if their flow sends again)\n", v.NoVIP)
	}
	fmt.Fprintln(w, "flows cannot be listed (conntrack keeps digests, not 5-tuples): look one up with l4lb flows --flow PROTO SRC DST")
	return w.Flush()
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/l4lb/l4lb/pkg/admin"
	"github.com/l4lb/l4lb/pkg/daemon"
)

// newTraceCmd is `l4lb trace`: where the node's XDP program (or nftables rules) would
// send a packet, and why.
func newTraceCmd(f *clientFlags) *cobra.Command {
	var flags string
	var size int
	cmd := &cobra.Command{
		Use:   "trace PROTO SRC DST [--flags S] [--size N]",
		Short: "Show where the XDP program or nftables rules would send a packet, and why",
		Long: `Trace one packet through the node's loaded XDP program: the prefilter's verdict, the VIP
it matches (or why none), the conntrack entry and its backend, the ring slot and its backend,
the encapsulation with its outer addresses, and the MTU verdict.

The daemon builds the packet (PROTO tcp or udp, SRC and DST as ADDR:PORT, IPv6 as
[ADDR]:PORT; --flags the TCP flags, default A: a packet of an established connection; S: a
new connection) and runs the program's own object over the live maps with
BPF_PROG_TEST_RUN, in a mode that writes nothing: no conntrack entry, no counter. A trace
never changes what a real flow gets. Needs the admin token.

On a node with dataplane nftables the answer comes from l4lb's rules as the kernel holds
them: the VIP rule that matches, the ring slot its hash picks and the backend there, the
DNAT or no-backend drop and the masquerade, and the kernel's conntrack entry for the flow,
which decides established flows before any rule. iptables and IPVS nodes answer that they
cannot be traced, and what to look at instead.`,
		Example: `  l4lb trace tcp 198.51.100.7:40000 203.0.113.10:80 --flags S
  l4lb trace udp '[2001:db8::7]:5300' '[2001:db8::10]:53' -o json`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			sz := ""
			if size > 0 {
				sz = fmt.Sprint(size)
			}
			q, err := admin.ParseTrace(args[0], args[1], args[2], flags, sz)
			if err != nil {
				return err
			}
			raw, err := f.do(http.MethodGet, admin.TracePath(q), nil)
			if err != nil {
				return err
			}
			var v daemon.TraceView
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("admin api: %w", err)
			}
			out := cmd.OutOrStdout()
			return f.print(out, raw, func() error { return printTrace(out, v) })
		},
	}
	cmd.Flags().StringVar(&flags, "flags", "", "TCP flags of the packet: letters of S A F R P U (default A)")
	cmd.Flags().IntVar(&size, "size", 0, "IP length of the packet in bytes (default: headers only)")
	return cmd
}

func printTrace(out io.Writer, v daemon.TraceView) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	row := func(k, val string) {
		if val != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, val)
		}
	}
	row("packet", v.Packet)
	row("prefilter", v.Prefilter)
	vip := v.VIP
	if vip != "" && v.VIPKey != "" {
		vip += " (" + v.VIPKey + ")"
	} else if vip == "" {
		vip = v.VIPKey
	}
	row("vip", vip)
	row("no vip", v.NoVIP)
	row("conntrack", v.Conntrack)
	if v.Hash != 0 {
		row("hash", fmt.Sprintf("%#08x", v.Hash))
	}
	row("ring", v.Ring)
	row("guard", v.Guard)
	row("backend", v.Backend)
	row("mtu", v.MTU)
	row("encap", v.Encap)
	row("would write", v.Writes)
	row("rule", v.Rule)
	row("warning", v.Warning)
	row("verdict", v.Verdict+" ("+v.Reason+")")
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(out, v.Summary)
	return err
}

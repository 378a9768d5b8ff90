package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/l4lb/l4lb/pkg/daemon"
)

// newSocketsCmd is `l4lb sockets`: the socket LB's counters per VIP and the local
// processes that made the most sampled translated connects.
func newSocketsCmd(f *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use: "sockets", Short: "Show connect-time socket LB: counters and top local clients per VIP", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := f.do(http.MethodGet, "/v1/sockets", nil)
			if err != nil {
				return err
			}
			var v daemon.SocketsView
			if err := json.Unmarshal(raw, &v); err != nil {
				return fmt.Errorf("admin api: %w", err)
			}
			return f.print(cmd.OutOrStdout(), raw, func() error {
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
				printSockets(w, v)
				return w.Flush()
			})
		},
	}
}

func printSockets(w *tabwriter.Writer, v daemon.SocketsView) {
	if !v.Enabled {
		fmt.Fprintln(w, "socket lb: off (dataplane is not socket and socket_lb.enabled is false)")
		return
	}
	sampling := "off"
	if v.SampleEvery > 0 {
		sampling = fmt.Sprintf("1 connect in %d", v.SampleEvery)
	}
	fmt.Fprintf(w, "socket lb on cgroup %s, sampling %s\n", orDash(v.Cgroup), sampling)
	fmt.Fprintln(w, "VIP\tNAME\tCONNECTS\tSENDMSGS\tNO BACKEND")
	for _, vip := range v.VIPs {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\n", vip.Key, vip.Name, vip.Counters.Connects, vip.Counters.Sendmsgs, vip.Counters.NoBackend)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "TOP LOCAL CLIENTS\tCOMMAND\tSAMPLED\tPIDS\tLAST PID\tCGROUP")
	for _, vip := range v.VIPs {
		for _, c := range vip.Clients {
			cg := v.Cgroups[c.CgroupID]
			if cg == "" {
				cg = fmt.Sprintf("id %d", c.CgroupID)
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%s\n", vip.Name, c.Comm, c.Connects, c.PIDs, c.LastPID, cg)
		}
		if vip.Other > 0 {
			fmt.Fprintf(w, "%s\t(others)\t%d\t\t\t\n", vip.Name, vip.Other)
		}
	}
}

// printSocketLB is the socket LB's part of `l4lb status`.
func printSocketLB(w *tabwriter.Writer, v daemon.View) {
	if v.SocketLB == nil {
		return
	}
	state := "detached"
	if v.SocketLB.Attached {
		state = "attached"
	}
	fmt.Fprintf(w, "socket lb %s to cgroup %s, %d connects sampled\n", state, orDash(v.SocketLB.Cgroup), v.SocketLB.SampledConnects)
	fmt.Fprintln(w, "VIP\tNAME\tSOCKET CONNECTS\tSENDMSGS\tNO BACKEND")
	for _, vip := range v.VIPs {
		if vip.Socket != nil {
			fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\n", vip.Key, vip.Name, vip.Socket.Connects, vip.Socket.Sendmsgs, vip.Socket.NoBackend)
		}
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

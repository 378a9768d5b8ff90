package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/daemon"
)

func newCheckCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Validate a configuration without touching the system",
		Long: `check prints every problem of a configuration as FILE:LINE: field: message and exits 1
if there is any. Warnings (FILE:LINE: warning: field: message) are printed too but leave
the exit status 0: the configuration works, and something in it deserves a second look.
With an XDP data plane and no nexthop.mac, each interface whose next hop's MAC cannot be
found on this host (no route with a gateway through it, or the gateway's neighbour entry
unresolved) is a warning too: check reads the routing tables, and changes nothing.
A note says, for each VIP with health checks via: tunnel, which path they take with the
configured data plane (the NAT and socket modes check backends directly, as they
forward).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			cfg, warns, err := config.LoadWithWarnings(path)
			var ps config.Problems
			if errors.As(err, &ps) {
				for _, p := range ps {
					fmt.Fprintln(out, p.String())
				}
				return fmt.Errorf("%s: %d problem(s)", path, len(ps))
			}
			if err != nil {
				return err
			}
			// Interfaces whose next hop this host cannot find (read from its routing
			// tables, which check does not change).
			for _, w := range daemon.NextHopWarnings(cfg) {
				w.File = path
				warns = append(warns, w)
			}
			for _, w := range warns {
				fmt.Fprintln(out, warning(w))
			}
			for _, n := range daemon.HealthPathNotes(cfg) {
				fmt.Fprintf(out, "%s: note: %s\n", path, n)
			}
			note := ""
			if len(warns) > 0 {
				note = fmt.Sprintf(", %d warning(s)", len(warns))
			}
			fmt.Fprintf(out, "%s: ok (%d vips%s)\n", path, len(cfg.VIPs), note)
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/l4lb/l4lb.yaml", "configuration file")
	return cmd
}

// warning formats a warning like a compiler's: FILE:LINE: warning: field: message.
func warning(p config.Problem) string { return p.Format("warning") }

package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/daemon"
)

func newRunCmd(logger *slog.Logger) *cobra.Command {
	var path string
	var cleanup bool
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the load balancer node (until SIGINT/SIGTERM; SIGHUP reloads the config)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := daemon.New(daemon.Options{ConfigPath: path, CleanupOnExit: cleanup, Logger: logger})
			if err != nil {
				return err
			}
			return d.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/l4lb/l4lb.yaml", "configuration file")
	cmd.Flags().BoolVar(&cleanup, "cleanup-on-exit", false, "detach and unpin everything on exit (default: keep forwarding)")
	return cmd
}

func newCleanupCmd(logger *slog.Logger) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "cleanup --config FILE",
		Short: "Detach the XDP program, remove its pinned maps and l4lb's nftables/iptables rules (forwarding stops)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			removed, err := daemon.Cleanup(cfg)
			if len(removed) > 0 {
				logger.Info("cleaned up", "bpffs", cfg.BPFFS, "removed", removed)
			}
			if err != nil {
				return err
			}
			if len(removed) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "nothing pinned in %s and no l4lb rules\n", cfg.BPFFS)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s (%d objects: %s)\n", cfg.BPFFS, len(removed), strings.Join(removed, ", "))
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "/etc/l4lb/l4lb.yaml", "configuration file")
	return cmd
}

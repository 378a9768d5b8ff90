package main

import (
	"io"
	"log/slog"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	var cf clientFlags
	root := &cobra.Command{
		Use:           "l4lb",
		Short:         "eBPF L4 load balancer node",
		SilenceUsage:  true,
		SilenceErrors: true,
		// An unknown -o is an error before anything runs, rather than a table.
		PersistentPreRunE: func(*cobra.Command, []string) error { return checkFormat(cf.output) },
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	cf.register(root)
	root.AddCommand(newVersionCmd(), newDecapCmd(logger), newRunCmd(logger), newCheckCmd(), newCleanupCmd(logger))
	root.AddCommand(newStatusCmds(&cf)...)
	root.AddCommand(newMutateCmds(&cf)...)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := io.WriteString(cmd.OutOrStdout(), "l4lb "+version+"\n")
			return err
		},
	}
}

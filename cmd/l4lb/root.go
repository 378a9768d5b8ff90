package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/l4lb/l4lb/internal/buildinfo"
	"github.com/l4lb/l4lb/internal/logging"
)

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	var cf clientFlags
	root := &cobra.Command{
		Use:           "l4lb",
		Short:         "eBPF L4 load balancer node",
		Version:       buildinfo.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		// An unknown -o is an error before anything runs, rather than a table.
		PersistentPreRunE: func(*cobra.Command, []string) error { return checkFormat(cf.output) },
	}
	root.SetVersionTemplate("l4lb {{.Version}}\n")
	root.SetOut(stdout)
	root.SetErr(stderr)
	// Under systemd, stderr is the journal: it stamps each line, and the line's prefix
	// gives its priority.
	logger := logging.New(stderr, stderr == io.Writer(os.Stderr) && logging.StderrIsJournal())
	cf.register(root)
	root.AddCommand(newVersionCmd(&cf), newDecapCmd(logger), newRunCmd(logger), newCheckCmd(), newCleanupCmd(logger))
	root.AddCommand(newManCmd())
	root.AddCommand(newStatusCmds(&cf)...)
	root.AddCommand(newMutateCmds(&cf)...)
	root.AddCommand(newSocketsCmd(&cf))
	root.AddCommand(newDenyCmd(&cf))
	root.AddCommand(newMonitorCmd(&cf))
	return root
}

func newVersionCmd(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, the commit it was built from and the Go toolchain (-o json or yaml for every field)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := buildinfo.Get()
			doc, err := json.Marshal(info)
			if err != nil {
				return err
			}
			return cf.print(cmd.OutOrStdout(), doc, func() error {
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "l4lb %s\n", info)
				return err
			})
		},
	}
}

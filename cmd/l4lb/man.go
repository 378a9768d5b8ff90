package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/l4lb/l4lb/internal/buildinfo"
)

// newManCmd writes a man page per command (l4lb.1, l4lb-run.1, ...): the package ships
// them. Shell completion scripts come from cobra's own `l4lb completion SHELL`.
func newManCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:    "man --dir DIR",
		Short:  "Write the man pages (section 1) into a directory",
		Args:   cobra.NoArgs,
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // same input, same pages: reproducible packages
			hdr := &doc.GenManHeader{Title: "L4LB", Section: "1", Source: "l4lb " + buildinfo.Get().Version, Manual: "l4lb manual"}
			if err := doc.GenManTree(root, hdr, dir); err != nil {
				return fmt.Errorf("write man pages: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write the pages into")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

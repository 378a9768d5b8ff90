package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/l4lb/l4lb/pkg/config"
	"github.com/l4lb/l4lb/pkg/daemon"
)

// denyTimeout bounds a deny request: a million prefixes take seconds to load.
const denyTimeout = 2 * time.Minute

func newDenyCmd(f *clientFlags) *cobra.Command {
	deny := &cobra.Command{Use: "deny", Short: "Manage the prefilter's source deny list (dropped before any other work)"}
	var files []string
	prefixes := func(cmd *cobra.Command, args []string) ([]string, error) {
		out := append([]string(nil), args...)
		for _, name := range files {
			var r io.Reader = cmd.InOrStdin()
			if name != "-" {
				fh, err := os.Open(name)
				if err != nil {
					return nil, err
				}
				defer fh.Close()
				r = fh
			}
			list, err := config.ReadPrefixes(name, r)
			if err != nil {
				return nil, err
			}
			for _, p := range list {
				out = append(out, p.String())
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("no prefixes: give them as arguments or with -f FILE")
		}
		return out, nil
	}
	var force bool
	change := func(use, short, method string) *cobra.Command {
		c := &cobra.Command{
			Use: use + " [PREFIX...] [-f FILE]", Short: short,
			RunE: func(cmd *cobra.Command, args []string) error {
				ps, err := prefixes(cmd, args)
				if err != nil {
					return err
				}
				body := map[string]any{"prefixes": ps}
				if force {
					body["force"] = true
				}
				out, err := f.doDeny(method, body)
				if err != nil {
					return err
				}
				return f.print(cmd.OutOrStdout(), out, func() error {
					_, err := fmt.Fprintf(cmd.OutOrStdout(), "ok (%d prefixes)\n", len(ps))
					return err
				})
			},
		}
		c.Flags().StringArrayVarP(&files, "file", "f", nil, "read prefixes from a file, one a line ('#' comments; - for stdin); repeatable")
		return c
	}
	add := change("add", "Add prefixes or addresses to the deny list (kept across restarts)", http.MethodPost)
	add.Long = `add adds source prefixes to the deny list. A prefix that covers a BGP peer, a backend
or the address this command connects from is refused, naming what it covers, and nothing
is added: the prefilter would drop the peer's session, the backend's health-check
answers or the operator's own connection. --force adds it anyway.`
	add.Flags().BoolVar(&force, "force", false, "add prefixes even if they cover a BGP peer, a backend or this client")
	del := change("del", "Remove prefixes added with 'deny add' (configured ones are removed in the configuration)", http.MethodDelete)
	list := &cobra.Command{
		Use: "list", Short: "List the deny list with the packets each prefix dropped", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			raw, err := f.doDeny(http.MethodGet, nil)
			if err != nil {
				return err
			}
			var entries []daemon.DenyEntry
			if err := json.Unmarshal(raw, &entries); err != nil {
				return fmt.Errorf("admin api: %w", err)
			}
			return f.print(cmd.OutOrStdout(), raw, func() error {
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
				fmt.Fprintln(w, "PREFIX\tDROPS\tSOURCE")
				for _, e := range entries {
					fmt.Fprintf(w, "%s\t%d\t%s\n", e.Prefix, e.Drops, e.Source)
				}
				return w.Flush()
			})
		},
	}
	deny.AddCommand(add, del, list)
	return deny
}

// doDeny calls /v1/deny, with a timeout for bulk loads.
func (f *clientFlags) doDeny(method string, body any) ([]byte, error) {
	return f.doTimeout(method, "/v1/deny", body, denyTimeout)
}

// Command testbed brings the l4lb testbed up and down and runs commands in its nodes.
//
//	testbed up | down | status
//	testbed exec NODE -- CMD [ARG...]
//	testbed stop|start|kill NODE     (l4lb on an LB node, the servers on a backend)
//	testbed wait [--hops N]           (BGP established and VIP routes with N next hops)
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/l4lb/l4lb/testbed"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			os.Exit(ee.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "testbed:", err)
		os.Exit(1)
	}
}

type flags struct {
	prefix, dir, l4lb, conf, mode string
}

func (f *flags) bed() (*testbed.Bed, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	bin := f.l4lb
	if bin == "" {
		bin = filepath.Join(filepath.Dir(self), "l4lb")
	}
	conf, err := filepath.Abs(f.conf)
	if err != nil {
		return nil, err
	}
	return testbed.New(testbed.Config{
		Prefix: f.prefix, Dir: f.dir, L4LB: bin, Self: self,
		LBConfig: func(lb string) (string, []string) { return filepath.Join(conf, lb+".yaml"), nil },
		Mode:     f.mode,
	}), nil
}

// bedAndNode returns the testbed and the node an argument names.
func (f *flags) bedAndNode(arg string) (*testbed.Bed, string, error) {
	b, err := f.bed()
	if err != nil {
		return nil, "", err
	}
	n, err := f.node(arg)
	return b, n, err
}

// node accepts "client" and "l4lb-client".
func (f *flags) node(arg string) (string, error) {
	n := strings.TrimPrefix(arg, f.prefix)
	if !slices.Contains(testbed.Nodes, n) {
		return "", fmt.Errorf("unknown node %q: want one of %s (with or without %q)", arg, strings.Join(testbed.Nodes, ", "), f.prefix)
	}
	return n, nil
}

func newRoot() *cobra.Command {
	f := &flags{}
	root := &cobra.Command{
		Use:           "testbed",
		Short:         "The l4lb testbed: client, BIRD router, two l4lb nodes, three backends, in network namespaces",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&f.prefix, "prefix", "l4lb-", "namespace name prefix")
	root.PersistentFlags().StringVar(&f.dir, "dir", "/run/l4lb-testbed", "directory for configs, logs, pid files and bpffs mounts")
	root.PersistentFlags().StringVar(&f.l4lb, "l4lb", "", "l4lb binary (default: next to this one)")
	root.PersistentFlags().StringVar(&f.conf, "conf", "conf/testbed", "directory with lb1.yaml and lb2.yaml")
	root.PersistentFlags().StringVar(&f.mode, "mode", os.Getenv("L4LB_TESTBED_MODE"), "data plane of the LB nodes: auto, xdp, nftables, iptables (default: their config's, or what up was given; env L4LB_TESTBED_MODE)")

	var wait bool
	up := &cobra.Command{
		Use: "up", Short: "Build the testbed (removing a stale one) and start everything", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := f.bed()
			if err != nil {
				return err
			}
			if err := b.Up(cmd.Context()); err != nil {
				return err
			}
			if wait {
				return waitReady(cmd, b, len(testbed.LBNodes), 60*time.Second)
			}
			return nil
		},
	}
	up.Flags().BoolVar(&wait, "wait", true, "wait for BGP and the ECMP routes")

	down := &cobra.Command{
		Use: "down", Short: "Remove everything the testbed made", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := f.bed()
			if err != nil {
				return err
			}
			return b.Down()
		},
	}
	status := &cobra.Command{
		Use: "status", Short: "Show the nodes and their processes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := f.bed()
			if err != nil {
				return err
			}
			s, err := b.Status()
			fmt.Fprint(cmd.OutOrStdout(), s)
			return err
		},
	}
	execCmd := &cobra.Command{
		Use: "exec NODE -- CMD [ARG...]", Short: "Run a command in a node", Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, n, err := f.bedAndNode(args[0])
			if err != nil {
				return err
			}
			c := b.Command(cmd.Context(), n, args[1:]...)
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr()
			return c.Run()
		},
	}
	proc := func(use, short string, fn func(b *testbed.Bed, node string) error) *cobra.Command {
		return &cobra.Command{
			Use: use + " NODE", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				b, n, err := f.bedAndNode(args[0])
				if err != nil {
					return err
				}
				return fn(b, n)
			},
		}
	}
	stop := proc("stop", "Stop l4lb on an LB node (SIGTERM) or a backend's servers", func(b *testbed.Bed, n string) error {
		switch {
		case slices.Contains(testbed.LBNodes, n):
			return b.Signal(n, "l4lb", syscall.SIGTERM, 15*time.Second)
		case slices.Contains(testbed.BackendNodes, n):
			return b.StopBackend(n)
		}
		return fmt.Errorf("%s: only LB nodes and backends can be stopped", n)
	})
	kill := proc("kill", "kill -9 l4lb on an LB node", func(b *testbed.Bed, n string) error {
		if !slices.Contains(testbed.LBNodes, n) {
			return fmt.Errorf("%s: only l4lb on an LB node can be killed", n)
		}
		return b.Signal(n, "l4lb", syscall.SIGKILL, 5*time.Second)
	})
	start := proc("start", "Start l4lb on an LB node or a backend's servers again", func(b *testbed.Bed, n string) error {
		switch {
		case slices.Contains(testbed.LBNodes, n):
			if _, alive := b.PID(n, "l4lb"); alive {
				return fmt.Errorf("l4lb on %s is already running", n)
			}
			return b.StartLB(n)
		case slices.Contains(testbed.BackendNodes, n):
			return b.StartBackend(n)
		}
		return fmt.Errorf("%s: only LB nodes and backends can be started", n)
	})
	var hops int
	var timeout time.Duration
	waitCmd := &cobra.Command{
		Use: "wait", Short: "Wait until the router has BGP with every running LB node and ECMP routes to the VIPs", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := f.bed()
			if err != nil {
				return err
			}
			return waitReady(cmd, b, hops, timeout)
		},
	}
	waitCmd.Flags().IntVar(&hops, "hops", len(testbed.LBNodes), "next hops each VIP route must have")
	waitCmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "give up after")

	var name, httpAddr string
	var udpPort int
	serve := &cobra.Command{
		Use: "serve --name NAME", Short: "A backend's servers (the testbed runs this)", Hidden: true, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer cancel()
			return testbed.Serve(ctx, name, httpAddr, udpPort)
		},
	}
	serve.Flags().StringVar(&name, "name", "", "name to answer with")
	serve.Flags().StringVar(&httpAddr, "http", ":80", "HTTP listen address")
	serve.Flags().IntVar(&udpPort, "udp", 53, "UDP echo port")

	var count int
	udp := &cobra.Command{
		Use: "udp ADDR:PORT [--count N]", Short: "Send UDP datagrams (from the node you run it in) and print each reply", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return testbed.UDPProbe(cmd.Context(), cmd.OutOrStdout(), args[0], count)
		},
	}
	udp.Flags().IntVar(&count, "count", 1, "datagrams to send, each from a new source port")

	root.AddCommand(up, down, status, execCmd, stop, start, kill, waitCmd, serve, udp)
	return root
}

func waitReady(cmd *cobra.Command, b *testbed.Bed, hops int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	var last string
	ok := testbed.Eventually(ctx, func() bool {
		var err error
		last, err = b.Ready(ctx, hops)
		return err == nil && last == ""
	})
	if !ok {
		return fmt.Errorf("not ready after %s: %s", timeout, last)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "testbed ready: BGP established, %d next hop(s) to %s and %s\n", hops, testbed.VIP4, testbed.VIP6)
	return nil
}

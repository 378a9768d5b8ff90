// Command l4lb is the l4lb load-balancer node: see README.md.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/l4lb/l4lb/internal/bpfobj"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx); err != nil {
		// A program the kernel rejected: its verifier log first, for a bug report, and
		// the one-line summary (program, complaint, kernel needed) last, where it is seen.
		if log := bpfobj.VerifierLog(err, 200); log != "" {
			fmt.Fprintf(os.Stderr, "verifier log:\n%s\n", log)
		}
		fmt.Fprintln(os.Stderr, "l4lb:", err)
		os.Exit(1)
	}
}

package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/l4lb/l4lb/pkg/lb/ipvs"
)

// printIPVS prints l4lb's IPVS services the way `ipvsadm -Ln --stats` does, with the
// weights and connection counts of `ipvsadm -Ln` beside the counters.
func printIPVS(w *tabwriter.Writer, t []ipvs.ServiceStatus) {
	fmt.Fprintln(w, "\nIPVS\tPROT LOCALADDRESS:PORT\tSCHEDULER FLAGS\tCONNS\tINPKTS\tOUTPKTS\tINBYTES\tOUTBYTES")
	fmt.Fprintln(w, "\t  -> REMOTEADDRESS:PORT\tFORWARD WEIGHT ACTIVE INACTIVE\t\t\t\t\t")
	for _, s := range t {
		if s.Missing {
			fmt.Fprintf(w, "\t%s  %s\t(missing: restored by the next pass)\t\t\t\t\t\n", strings.ToUpper(s.Proto), s.Address)
			continue
		}
		sched := s.Scheduler
		if len(s.Flags) > 0 {
			sched += " (" + strings.Join(s.Flags, ",") + ")"
		}
		fmt.Fprintf(w, "\t%s  %s\t%s\t%d\t%d\t%d\t%d\t%d\n", strings.ToUpper(s.Proto), s.Address, sched,
			s.Stats.Conns, s.Stats.InPkts, s.Stats.OutPkts, s.Stats.InBytes, s.Stats.OutBytes)
		for _, d := range s.Dests {
			leaving := ""
			if d.Leaving {
				leaving = " leaving"
			}
			fmt.Fprintf(w, "\t  -> %s\t%s %d %d %d%s\t%d\t%d\t%d\t%d\t%d\n", d.Address, d.Forward, d.Weight, d.ActiveConns, d.InactiveConns, leaving,
				d.Stats.Conns, d.Stats.InPkts, d.Stats.OutPkts, d.Stats.InBytes, d.Stats.OutBytes)
		}
	}
}

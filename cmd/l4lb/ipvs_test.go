package main

import (
	"bytes"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/google/go-cmp/cmp"

	"github.com/l4lb/l4lb/pkg/lb/ipvs"
)

func TestPrintIPVS(t *testing.T) {
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	printIPVS(w, []ipvs.ServiceStatus{
		{Key: "203.0.113.10:80/tcp", Proto: "tcp", Address: "203.0.113.10:80", Scheduler: "mh", Flags: []string{"mh-fallback", "mh-port"},
			Stats: ipvs.Stats{Conns: 36, InPkts: 216, OutPkts: 0, InBytes: 12000},
			Dests: []ipvs.DestStatus{
				{Address: "192.0.2.18:80", Forward: "Tunnel", Weight: 1, InactiveConns: 17, Stats: ipvs.Stats{Conns: 17, InPkts: 102, InBytes: 6000}},
				{Address: "192.0.2.34:80", Forward: "Tunnel", Weight: 0, ActiveConns: 1, Leaving: true},
			}},
		{Key: "[2001:db8:f::11]:53/udp", Proto: "udp", Address: "[2001:db8:f::11]:53", Missing: true},
	})
	w.Flush()
	want := `
IPVS  PROT LOCALADDRESS:PORT    SCHEDULER FLAGS                       CONNS  INPKTS  OUTPKTS  INBYTES  OUTBYTES
        -> REMOTEADDRESS:PORT   FORWARD WEIGHT ACTIVE INACTIVE
      TCP  203.0.113.10:80      mh (mh-fallback,mh-port)              36     216     0        12000    0
        -> 192.0.2.18:80        Tunnel 1 0 17                         17     102     0        6000     0
        -> 192.0.2.34:80        Tunnel 0 1 0 leaving                  0      0       0        0        0
      UDP  [2001:db8:f::11]:53  (missing: restored by the next pass)
`
	got := b.String()
	trim := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			out = append(out, strings.TrimRight(l, " "))
		}
		return out
	}
	if diff := cmp.Diff(trim(want), trim(got)); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
}

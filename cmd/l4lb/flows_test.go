package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const flowsDoc = `{"entries": 10, "capacity": 4096, "fill_percent": 0.24, "buckets": 1024,
 "bucket_fill": [1016, 6, 2, 0, 0], "busy_ways": 0, "established": 8, "referenced": 7, "one_packet": 2,
 "udp": 3, "udp_expired": 1,
 "backends": [{"id": 1, "address": "198.51.100.11", "exists": true, "entries": 4, "vips": ["web", "web-alt"], "shared": true},
   {"id": 9, "exists": false, "entries": 1, "vips": [], "shared": false}],
 "vips": [{"name": "web", "key": "203.0.113.10:80/tcp", "id": 0, "entries": 2, "shared_entries": 4, "exact": false},
   {"name": "dns", "key": "[2001:db8::10]:53/udp", "id": 2, "entries": 3, "shared_entries": 0, "exact": true}],
 "no_vip_entries": 1, "counters": {"ct_evicted": 2, "ct_hit": 18446744073709551615}, "walk_ms": 1.234}`

const lookupDoc = `{"proto": "tcp", "src": "198.51.100.7:40000", "dst": "203.0.113.10:80", "digest": "00000000000000ab",
 "buckets": [7, 9], "searched": 1, "busy_ways": 0, "tracked": true,
 "entry": {"bucket": 7, "way": 2, "state": "0x1d0002", "marks": ["ref", "est"], "generation": 3,
   "backend": {"id": 2, "address": "198.51.100.12", "exists": true}, "member": false, "members_checked": true,
   "age": "not recorded for tcp", "expired": false},
 "vip": {"name": "web", "key": "203.0.113.10:80/tcp", "id": 4},
 "ring": {"id": 1, "address": "198.51.100.11", "exists": true},
 "outcome": "rehash_not_member", "next_packet": "the VIP no longer has backend 2 198.51.100.12: re-hashed",
 "syn": "a SYN never reads conntrack: it goes by the ring to backend 1 198.51.100.11"}`

// fakeFlows answers /v1/flows like the daemon: the summary without parameters, the
// lookup with them (recorded), 501 for a node whose data plane has no flow table.
func fakeFlows(t *testing.T, unavailable bool) (addr string, queries *[]string) {
	t.Helper()
	var qs []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/flows" || r.Method != http.MethodGet {
			w.WriteHeader(404)
			return
		}
		qs = append(qs, r.URL.RawQuery)
		switch {
		case unavailable:
			w.WriteHeader(http.StatusNotImplemented)
			w.Write([]byte(`{"error": "not available for dataplane nftables: see conntrack -L"}`))
		case r.URL.RawQuery == "":
			w.Write([]byte(flowsDoc))
		default:
			w.Write([]byte(lookupDoc))
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), &qs
}

func TestFlowsCommand(t *testing.T) {
	addr, queries := fakeFlows(t, false)
	out, err := run("flows", "--admin", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"entries               10 of 4096 (0.24%), 1024 buckets of 4 ways, walked in 1.2 ms",
		"buckets by ways used  0: 1016  1: 6  2: 2  3: 0  4: 0",
		"established 8 (referenced 7), one packet 2",
		"3 (entries with a time: tcp entries have none), 1 idle past udp_timeout",
		"ct_evicted 2  ct_hit 18446744073709551615",
		"203.0.113.10:80/tcp    web   0   2..6 *",
		"[2001:db8::10]:53/udp  dns   2   3\n",
		"1        198.51.100.11  4        web, web-alt *",
		"9        (deleted)      1        -",
		"* a backend shared by VIPs",
		"entries naming a backend no VIP has: 1 (stale",
		"flows cannot be listed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("l4lb flows lacks %q:\n%s", want, out)
		}
	}

	out, err = run("flows", "--admin", addr, "--flow", "tcp", "198.51.100.7:40000", "203.0.113.10:80")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"flow         tcp 198.51.100.7:40000 -> 203.0.113.10:80",
		"vip          web 203.0.113.10:80/tcp (id 4)",
		"buckets      7 and 9, searched the first only (it holds the flow)",
		"tracked      yes: bucket 7 way 2",
		"backend      2 198.51.100.12, no longer a member of the vip",
		"marks        ref est, generation 3 (state 0x1d0002)",
		"age          not recorded for tcp",
		"ring now     backend 1 198.51.100.11",
		"next packet  the VIP no longer has backend 2",
		"syn          a SYN never reads conntrack",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("l4lb flows --flow lacks %q:\n%s", want, out)
		}
	}
	if got := (*queries)[len(*queries)-1]; got != "dst=203.0.113.10%3A80&proto=tcp&src=198.51.100.7%3A40000" {
		t.Errorf("lookup query %q", got)
	}

	// -o json is the API's document, unchanged.
	out, err = run("flows", "--admin", addr, "-o", "json", "--flow", "udp", "[2001:db8::7]:5300", "[2001:db8::10]:53")
	var got, want any
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || json.Unmarshal([]byte(lookupDoc), &want) != nil {
		t.Fatalf("flows -o json: %v\n%s", err, out)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("json (-want +got):\n%s", diff)
	}
	if got := (*queries)[len(*queries)-1]; got != "dst=%5B2001%3Adb8%3A%3A10%5D%3A53&proto=udp&src=%5B2001%3Adb8%3A%3A7%5D%3A5300" {
		t.Errorf("ipv6 lookup query %q", got)
	}
}

// Bad input is refused before any request, naming what is wrong; a data plane without a
// flow table says where its flows are.
func TestFlowsCommandErrors(t *testing.T) {
	addr, queries := fakeFlows(t, false)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--flow", "tcp", "198.51.100.7:40000"}, "--flow takes PROTO SRC DST"},
		{[]string{"tcp", "198.51.100.7:40000", "203.0.113.10:80"}, "use --flow PROTO SRC DST"},
		{[]string{"--flow", "icmp", "198.51.100.7:40000", "203.0.113.10:80"}, `--flow: proto "icmp"`},
		{[]string{"--flow", "tcp", "198.51.100.7", "203.0.113.10:80"}, `--flow: src "198.51.100.7"`},
		{[]string{"--flow", "tcp", "198.51.100.7:1", "2001:db8::10:80"}, `--flow: dst "2001:db8::10:80"`},
		{[]string{"--flow", "tcp", "[2001:db8::7]:1", "203.0.113.10:80"}, "different address families"},
	} {
		_, err := run(append([]string{"flows", "--admin", addr}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("flows %v: %v, want an error with %q", c.args, err, c.want)
		}
	}
	if len(*queries) != 0 {
		t.Errorf("bad input reached the api: %q", *queries)
	}
	addr, _ = fakeFlows(t, true)
	if _, err := run("flows", "--admin", addr); err == nil || err.Error() != "not available for dataplane nftables: see conntrack -L" {
		t.Errorf("flows on nftables: %v", err)
	}
}

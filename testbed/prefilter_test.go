package testbed_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/l4lb/l4lb/pkg/daemon"
	"github.com/l4lb/l4lb/testbed"
)

// A client address the prefilter denies, next to the testbed's client (same link).
const (
	deniedClient4 = "198.51.100.3"
	deniedClient6 = "2001:db8:c::3"
)

// TestPrivilegedPrefilterTestbed: traffic from a denied source (one address denied in the
// configuration, one added at run time with `l4lb deny add`) never reaches a backend,
// while the allowed client next to it is served; the deny counters show the drops.
func TestPrivilegedPrefilterTestbed(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("prefilter-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, lb := range testbed.LBNodes {
		raw, err := os.ReadFile(filepath.Join("..", "conf", "testbed", lb+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		conf := strings.Replace(string(raw), `token_file: ""`, "token_file: "+token, 1)
		conf += "\nprefilter:\n  deny: [" + deniedClient6 + "]\n"
		if err := os.WriteFile(filepath.Join(dir, lb+".yaml"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := newBedWith(t, func(lb string) (string, []string) { return filepath.Join(dir, lb+".yaml"), nil })
	ctx := context.Background()
	for _, args := range [][]string{
		{"ip", "addr", "add", deniedClient4 + "/24", "dev", "c0"},
		{"ip", "addr", "add", deniedClient6 + "/64", "dev", "c0", "nodad"},
	} {
		if err := b.In("client", args...); err != nil {
			t.Fatal(err)
		}
	}
	for _, lb := range testbed.LBNodes {
		out, err := b.Output(ctx, lb, b.L4LB(), "deny", "add", deniedClient4, "--token-file", token)
		if err != nil {
			t.Fatalf("%s: l4lb deny add: %v\n%s", lb, err, out)
		}
	}

	// Every backend's namespace captures what arrives from either client address (after
	// the backend's decap, so the inner source is seen).
	cctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	for _, be := range testbed.BackendNodes {
		cmd := b.Command(cctx, be, "tcpdump", "-i", "any", "-n", "-l", "-q",
			"src host "+testbed.Client4+" or src host "+deniedClient4+" or src host "+testbed.Client6+" or src host "+deniedClient6)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<16)
			var rest string
			for {
				n, err := out.Read(buf)
				rest += string(buf[:n])
				for {
					i := strings.IndexByte(rest, '\n')
					if i < 0 {
						break
					}
					line := rest[:i]
					rest = rest[i+1:]
					for _, src := range []string{deniedClient4, deniedClient6, testbed.Client4, testbed.Client6} {
						if strings.Contains(line, " "+src+".") {
							mu.Lock()
							seen[src]++
							mu.Unlock()
						}
					}
				}
				if err != nil {
					return
				}
			}
		}()
		t.Cleanup(func() { _ = cmd.Wait() })
	}
	time.Sleep(time.Second) // tcpdump attaches

	curl := func(src, url string) string {
		out, _ := b.Output(ctx, "client", "sh", "-c", "for i in 1 2 3 4 5; do curl -s -m 2 --interface "+src+" '"+url+"' || echo FAILED; done")
		return strings.Join(strings.Fields(out), " ")
	}
	for _, c := range []struct{ src, url string }{
		{testbed.Client4, "http://" + testbed.VIP4 + "/"},
		{testbed.Client6, "http://[" + testbed.VIP6 + "]/"},
	} {
		if out := curl(c.src, c.url); strings.Contains(out, "FAILED") || out == "" {
			t.Errorf("allowed client %s to %s: %q, want 5 answers", c.src, c.url, out)
		}
	}
	for _, c := range []struct{ src, url string }{
		{deniedClient4, "http://" + testbed.VIP4 + "/"},
		{deniedClient6, "http://[" + testbed.VIP6 + "]/"},
	} {
		if out := curl(c.src, c.url); out != "FAILED FAILED FAILED FAILED FAILED" {
			t.Errorf("denied client %s to %s: %q, want 5 failures", c.src, c.url, out)
		}
	}
	time.Sleep(500 * time.Millisecond)
	stop()
	wg.Wait()
	t.Logf("packets seen on the backends by source: %v", seen)
	if seen[deniedClient4] != 0 || seen[deniedClient6] != 0 {
		t.Errorf("packets from denied sources reached a backend: %v", seen)
	}
	if seen[testbed.Client4] == 0 || seen[testbed.Client6] == 0 {
		t.Errorf("the capture saw no packet of the allowed client (capture broken?): %v", seen)
	}

	var drops uint64
	for _, lb := range testbed.LBNodes {
		out, err := b.Output(ctx, lb, b.L4LB(), "deny", "list", "-o", "json")
		if err != nil {
			t.Fatalf("%s: l4lb deny list: %v\n%s", lb, err, out)
		}
		var list []daemon.DenyEntry
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("%s: %v\n%s", lb, err, out)
		}
		src := map[string]string{}
		for _, e := range list {
			src[e.Prefix.String()] = e.Source
			drops += e.Drops
		}
		if src[deniedClient4+"/32"] != "runtime" || src[deniedClient6+"/128"] != "config" {
			t.Errorf("%s: deny list %+v, want %s/32 (runtime) and %s/128 (config)", lb, list, deniedClient4, deniedClient6)
		}
		t.Logf("%s: l4lb deny list: %+v", lb, list)
	}
	if drops == 0 {
		t.Error("no deny-list drops counted on either node")
	}
}

package testbed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/l4lb/l4lb/internal/testutil"
	"github.com/l4lb/l4lb/pkg/daemon"
	"github.com/l4lb/l4lb/testbed"
)

// TestPrivilegedStatusPage opens lb1's status page in a real browser (Debian's chromium,
// headless, driven by chromedp): the page shows the node's VIPs with their backends and
// BGP sessions, its rate charts move with traffic, a backend stopped on the testbed turns
// red within a few seconds, and the browser logs no error or warning.
func TestPrivilegedStatusPage(t *testing.T) {
	testutil.RequirePrivileged(t)
	testutil.RequireCommands(t, "chromium", "python3")
	b := newBed(t)

	// The admin API listens on 127.0.0.1:9100 inside lb1's namespace; the browser runs in
	// this one. A local port forwards into the namespace.
	fwd, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	go func() {
		for {
			c, err := fwd.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := b.Dial("lb1", "127.0.0.1:9100")
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
	url := "http://" + fwd.Addr().String() + "/"

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath("chromium"), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1200, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	defer cancelTimeout()

	var mu sync.Mutex
	var problems []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning || ev.Type == runtime.ConsoleAPICalledTypeAssert {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				problems = append(problems, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, fmt.Sprintf("exception: %s at %s:%d", ev.ExceptionDetails.Text, ev.ExceptionDetails.URL, ev.ExceptionDetails.LineNumber))
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
				problems = append(problems, fmt.Sprintf("log %s (%s): %s %s", ev.Entry.Level, ev.Entry.Source, ev.Entry.Text, ev.Entry.URL))
			}
		}
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}

	// What lb1 says, to compare the page with.
	out, err := b.Output(ctx, "lb1", b.L4LB(), "status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st daemon.View
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.CSS(`.vip[data-vip="web"] tr[data-backend]`))); err != nil {
		t.Fatalf("load %s: %v", url, err)
	}
	t.Logf("page loaded and rendered in %s", time.Since(start).Round(time.Millisecond))

	evalStrings := func(js string) []string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return v
	}
	evalString := func(js string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return v
	}

	// The listener hears what the page would log: a probe warning shows up, so an empty
	// list at the end means the page logged nothing.
	evalString(`console.warn("l4lb-probe"); "ok"`)
	heard := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !heard; time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		for i, p := range problems {
			if strings.Contains(p, "l4lb-probe") {
				problems = append(problems[:i], problems[i+1:]...)
				heard = true
				break
			}
		}
		mu.Unlock()
	}
	if !heard {
		t.Fatal("the console listener did not hear a console.warn")
	}

	t.Run("vips and backends as the node has them", func(t *testing.T) {
		if len(st.VIPs) == 0 {
			t.Fatal("lb1 has no VIPs")
		}
		for _, v := range st.VIPs {
			got := evalStrings(fmt.Sprintf(`[...document.querySelectorAll('.vip[data-key=%q] tr[data-backend]')].map(r => r.dataset.backend + " " + r.dataset.state)`, v.Key))
			var want []string
			for _, be := range v.Backends {
				want = append(want, be.Address+" up")
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("vip %s (%s): page shows %v, node has %v", v.Name, v.Key, got, want)
			}
		}
	})

	t.Run("bgp sessions", func(t *testing.T) {
		got := evalStrings(`[...document.querySelectorAll('tr[data-peer]')].map(r => r.dataset.peer + " " + r.dataset.state)`)
		if st.BGP == nil || len(got) != len(st.BGP.Peers) {
			t.Fatalf("page shows peers %v, node has %+v", got, st.BGP)
		}
		for _, p := range got {
			if !strings.HasSuffix(p, " up") {
				t.Errorf("peer %s", p)
			}
		}
	})

	t.Run("rates move with traffic", func(t *testing.T) {
		// ECMP spreads connections over lb1 and lb2: enough of them reach lb1.
		done := make(chan map[string]int, 1)
		go func() { done <- curlCounts(t, b, "http://"+testbed.VIP4+"/", 40) }()
		var maxRate float64
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) && maxRate == 0 {
			s := evalString(`document.querySelector('.vip[data-vip="web"][data-key*="tcp"] [data-chart="new_flows"]').previousElementSibling.querySelector('.value').textContent`)
			if r, err := strconv.ParseFloat(strings.Fields(s + " 0")[0], 64); err == nil && r > maxRate {
				maxRate = r
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("curl: %v", <-done)
		if maxRate == 0 {
			t.Error("the web VIP's new flows/s never rose above 0 while the client made 40 connections")
		} else {
			t.Logf("new flows/s on lb1 peaked at %.1f", maxRate)
		}
	})

	t.Run("a dropped packet shows in recent drops", func(t *testing.T) {
		// SYN+FIN to the VIP, impossible flags (drop_tcp_flags), from several source ports
		// so that ECMP takes some to lb1, whose page this is. A raw socket sends the TCP
		// header as given.
		if err := b.In("client", "python3", "-c", `import socket,struct
s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_TCP)
for p in range(41000,41016):
    s.sendto(struct.pack("!HHIIBBHHH",p,80,1,0,5<<4,0x03,64240,0,0),("`+testbed.VIP4+`",0))`); err != nil {
			t.Fatal(err)
		}
		row := `document.querySelector('#drops tr[data-reason="drop_tcp_flags"]')`
		deadline := time.Now().Add(10 * time.Second)
		for evalString(`String(`+row+` !== null)`) != "true" {
			if time.Now().After(deadline) {
				t.Fatalf("no drop_tcp_flags row in the recent drops within 10s: %s", evalString(`document.getElementById("drops").textContent`))
			}
			time.Sleep(200 * time.Millisecond)
		}
		cells := evalStrings(`[...` + row + `.querySelectorAll('td')].map(c => c.textContent)`)
		if len(cells) != 7 || !strings.HasPrefix(cells[3], testbed.Client4+":410") || cells[4] != testbed.VIP4+":80" || cells[5] != "web" || cells[2] != "tcp" {
			t.Errorf("drop row %q, want tcp from %s:410xx to %s:80, vip web", cells, testbed.Client4, testbed.VIP4)
		}
	})

	t.Run("a stopped backend turns red", func(t *testing.T) {
		be2 := testbed.BackendAddr4("be2")
		row := fmt.Sprintf(`document.querySelector('.vip[data-vip="web"] tr[data-backend=%q]')`, be2)
		stopped := time.Now()
		if err := b.StopBackend("be2"); err != nil {
			t.Fatal(err)
		}
		var state string
		for time.Since(stopped) < 10*time.Second {
			state = evalString(row + `.dataset.state`)
			if state == "down" {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if state != "down" {
			t.Fatalf("backend %s still %q on the page %s after it stopped", be2, state, time.Since(stopped).Round(time.Millisecond))
		}
		t.Logf("backend %s shown down %s after it stopped", be2, time.Since(stopped).Round(100*time.Millisecond))
		if color := evalString(`getComputedStyle(` + row + `.querySelector('td')).color`); color != "rgb(207, 34, 46)" {
			t.Errorf("down backend's row is %s, want red rgb(207, 34, 46)", color)
		}
		if path := os.Getenv("L4LB_SCREENSHOT"); path != "" {
			// For the docs: the page with traffic and a backend down.
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err == nil {
				err = os.WriteFile(path, png, 0o644)
			}
			if err != nil {
				t.Errorf("screenshot: %v", err)
			}
		}
		if err := b.StartBackend("be2"); err != nil {
			t.Error(err)
		}
	})

	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("the browser logged %d problem(s):\n%s", len(problems), strings.Join(problems, "\n"))
	}
}

package daemon

import (
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// listenNotify listens on a real unixgram socket as systemd does and points
// NOTIFY_SOCKET at it.
func listenNotify(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return c
}

// received returns the datagrams that arrive within wait.
func received(t *testing.T, c *net.UnixConn, wait time.Duration) []string {
	t.Helper()
	var got []string
	buf := make([]byte, 4096)
	for {
		c.SetReadDeadline(time.Now().Add(wait))
		n, err := c.Read(buf)
		if err != nil {
			return got
		}
		got = append(got, string(buf[:n]))
	}
}

// TestReadinessWaitsForBoth: READY=1 goes out once, at the step that makes the node both
// applied and attached (and, when it waits for BGP, BGP is done), whatever the order,
// and not before.
func TestReadinessWaitsForBoth(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	const bgpDone = "READY=1\nSTATUS=forwarding; bgp: 2/2 peers established"
	for _, tc := range []struct {
		name    string
		steps   []string // "applied", "attached", "attached-waiting-bgp", "bgp"
		readyAt int      // the step after which READY=1 arrives; -1: never
		want    string   // what arrives then; "": READY=1 with the data plane's status
	}{
		{"applied then attached", []string{"applied", "attached"}, 1, ""},
		{"attached, first pass failed, retry succeeds", []string{"attached", "applied"}, 1, ""},
		{"applied only", []string{"applied", "applied"}, -1, ""},
		{"attached only", []string{"attached"}, -1, ""},
		{"sent once", []string{"applied", "attached", "applied", "attached"}, 1, ""},
		{"waits for BGP", []string{"applied", "attached-waiting-bgp", "bgp"}, 2, bgpDone},
		{"BGP before the first good pass", []string{"attached-waiting-bgp", "bgp", "applied"}, 2, bgpDone},
		{"BGP never done", []string{"applied", "attached-waiting-bgp", "applied"}, -1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
			var r readiness
			for i, s := range tc.steps {
				switch s {
				case "applied":
					r.setApplied(log)
				case "attached", "attached-waiting-bgp":
					r.setAttached(log, "forwarding", s != "attached")
				case "bgp":
					r.setBGP(log, "bgp: 2/2 peers established")
				}
				var want []string
				if i == tc.readyAt {
					want = []string{"READY=1\nSTATUS=forwarding"}
					if tc.want != "" {
						want = []string{tc.want}
					}
				}
				if diff := cmp.Diff(want, received(t, c, 50*time.Millisecond)); diff != "" {
					t.Fatalf("after step %d (%s): datagrams (-want +got):\n%s", i, s, diff)
				}
			}
		})
	}
}

func TestSdNotify(t *testing.T) {
	t.Run("no socket: nothing to do", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		if err := sdNotify("READY=1"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("path socket", func(t *testing.T) {
		c := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
		if err := sdNotify("RELOADING=1", "MONOTONIC_USEC=12345"); err != nil {
			t.Fatal(err)
		}
		if got := received(t, c, time.Second); cmp.Diff([]string{"RELOADING=1\nMONOTONIC_USEC=12345"}, got) != "" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("abstract socket", func(t *testing.T) {
		name := "@l4lb-notify-test-" + strings.ReplaceAll(t.Name(), "/", "-") + time.Now().Format("150405.000000000")
		c := listenNotify(t, name)
		if err := sdNotify("STOPPING=1"); err != nil {
			t.Fatal(err)
		}
		if got := received(t, c, time.Second); cmp.Diff([]string{"STOPPING=1"}, got) != "" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("no listener", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent"))
		if err := sdNotify("READY=1"); err == nil {
			t.Fatal("no error")
		}
	})
}

func TestReadyStatus(t *testing.T) {
	got := readyStatus("xdp", map[string]string{"eth1": "adopted", "eth0": "native"}, 3)
	if want := "forwarding: xdp on eth0 (native), eth1 (adopted), 3 vips"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := readyStatus("socket", nil, 2), "forwarding: socket, 2 vips"; got != want {
		t.Errorf("socket LB alone: got %q, want %q", got, want)
	}
}

// TestReloadNotifications: a reload is framed by RELOADING=1 (with MONOTONIC_USEC, which
// Type=notify-reload wants) and READY=1 only once the node was reported ready. Before
// that, READY=1 after a reload would tell systemd the node forwards while its first pass
// is still failing.
func TestReloadNotifications(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	c := listenNotify(t, filepath.Join(t.TempDir(), "notify"))
	var r readiness
	reloads := 0
	reload := func() { reloads++ }

	r.setAttached(log, "forwarding", false)
	r.reload(log, reload)
	if got := received(t, c, 50*time.Millisecond); len(got) != 0 || reloads != 1 {
		t.Fatalf("reload before READY=1: ran %d times, sent %q; want it run and nothing sent", reloads, got)
	}

	r.setApplied(log)
	if got := received(t, c, 50*time.Millisecond); cmp.Diff([]string{"READY=1\nSTATUS=forwarding"}, got) != "" {
		t.Fatalf("first pass: got %q, want READY=1", got)
	}
	r.reload(log, func() {
		reloads++
		got := received(t, c, 50*time.Millisecond)
		if len(got) != 1 || !strings.HasPrefix(got[0], "RELOADING=1\nMONOTONIC_USEC=") {
			t.Fatalf("during the reload: %q, want RELOADING=1 with MONOTONIC_USEC", got)
		}
		if us, err := strconv.ParseUint(strings.TrimPrefix(got[0], "RELOADING=1\nMONOTONIC_USEC="), 10, 64); err != nil || us == 0 {
			t.Errorf("MONOTONIC_USEC in %q: want the monotonic clock in microseconds", got[0])
		}
	})
	if got := received(t, c, 50*time.Millisecond); reloads != 2 || len(got) != 1 || strings.TrimSpace(got[0]) != "READY=1" {
		t.Fatalf("after the reload: ran %d times, sent %q; want READY=1", reloads, got)
	}
}

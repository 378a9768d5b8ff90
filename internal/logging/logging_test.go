package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

func TestJournalLines(t *testing.T) {
	var out bytes.Buffer
	log := New(&out, true).With("component", "bgp")
	log.Info("session up", "peer", "192.0.2.9")
	log.Warn("retry")
	log.Error("failed", "error", "boom")
	log.WithGroup("g").Info("grouped", "time", "kept: not the record's time")
	log.Debug("not shown at the default level")
	want := []string{
		`<6>level=INFO msg="session up" component=bgp peer=192.0.2.9`,
		`<4>level=WARN msg=retry component=bgp`,
		`<3>level=ERROR msg=failed component=bgp error=boom`,
		`<6>level=INFO msg=grouped component=bgp g.time="kept: not the record's time"`,
	}
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("journal lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestTerminalLinesKeepTime(t *testing.T) {
	var out bytes.Buffer
	New(&out, false).Info("hello")
	if !strings.HasPrefix(out.String(), "time=") {
		t.Errorf("line %q: want a time= attribute outside the journal", out.String())
	}
}

// Records from many goroutines and derived handlers never interleave within a line.
func TestJournalConcurrentLinesWhole(t *testing.T) {
	var out lockedBuffer
	log := New(&out, true)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := log.With("worker", i)
			for j := 0; j < 200; j++ {
				l.Info("tick", "n", j)
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 1600 {
		t.Fatalf("%d lines, want 1600", len(lines))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "<6>level=INFO msg=tick worker=") || strings.Count(l, "<6>") != 1 {
			t.Fatalf("mixed line %q", l)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string { return l.b.String() }

var _ slog.Handler = (*journalHandler)(nil)

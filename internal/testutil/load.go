package testutil

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Request is one call a Load made: when it started and ended, who answered, or why it
// failed.
type Request struct {
	Start, End time.Time
	Answer     string
	Err        error
}

// Load keeps short-lived requests going from several goroutines while a test changes
// something underneath them, and records every one.
type Load struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	reqs []Request
}

// StartLoad calls do from workers goroutines, each at most once per every, until Stop.
// do makes one request (e.g. on a new connection) and returns who answered.
func StartLoad(workers int, every time.Duration, do func() (string, error)) *Load {
	l := &Load{stop: make(chan struct{})}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				start := time.Now()
				answer, err := do()
				l.mu.Lock()
				l.reqs = append(l.reqs, Request{Start: start, End: time.Now(), Answer: answer, Err: err})
				l.mu.Unlock()
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
			}
		}()
	}
	return l
}

// Stop ends the load, waits for the requests in flight and returns every request, in the
// order they started.
func (l *Load) Stop() []Request {
	close(l.stop)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := slices.Clone(l.reqs)
	slices.SortFunc(out, func(a, b Request) int { return a.Start.Compare(b.Start) })
	return out
}

// Tally sums up requests: how many were answered, by whom, and the failures.
type Tally struct {
	Answers map[string]int
	Failed  []Request
}

// TallyOf sums up the requests that started in [from, to); a zero from or to leaves
// that side open.
func TallyOf(reqs []Request, from, to time.Time) Tally {
	t := Tally{Answers: map[string]int{}}
	for _, r := range reqs {
		if (!from.IsZero() && r.Start.Before(from)) || (!to.IsZero() && !r.Start.Before(to)) {
			continue
		}
		if r.Err != nil {
			t.Failed = append(t.Failed, r)
			continue
		}
		t.Answers[r.Answer]++
	}
	return t
}

// Answered is the number of requests that got an answer.
func (t Tally) Answered() int {
	n := 0
	for _, c := range t.Answers {
		n += c
	}
	return n
}

// Only returns the answerers outside allowed, with their counts.
func (t Tally) Only(allowed ...string) map[string]int {
	out := map[string]int{}
	for name, c := range t.Answers {
		if !slices.Contains(allowed, name) {
			out[name] = c
		}
	}
	return out
}

// String is "N answered {a:x b:y}, M failed" and the first failures' errors.
func (t Tally) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d answered {", t.Answered())
	for i, name := range slices.Sorted(maps.Keys(t.Answers)) {
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%s:%d", name, t.Answers[name])
	}
	fmt.Fprintf(&sb, "}, %d failed", len(t.Failed))
	for i, r := range t.Failed {
		if i == 3 {
			fmt.Fprintf(&sb, "; ...")
			break
		}
		fmt.Fprintf(&sb, "; %s: %v", r.Start.Format("15:04:05.000"), r.Err)
	}
	return sb.String()
}

// CheckReplaced checks requests made across a change that replaced backend old by new
// beside keep: it logs the requests started before the change, while it applied and after,
// and fails t unless every request was answered, keep and old both answered before the
// change, only keep and new answered after it, and new did answer. now describes the
// system for a failure message.
func CheckReplaced(t testing.TB, reqs []Request, changeAt, appliedAt time.Time, keep, old, new string, now func() string) {
	t.Helper()
	before := TallyOf(reqs, time.Time{}, changeAt)
	during := TallyOf(reqs, changeAt, appliedAt)
	after := TallyOf(reqs, appliedAt, time.Time{})
	t.Logf("connections opened before the reload: %s", before)
	t.Logf("connections opened while it applied:  %s", during)
	t.Logf("connections opened after it applied:  %s", after)
	if before.Answers[keep] == 0 || before.Answers[old] == 0 {
		t.Fatalf("before the reload %s and %s should both answer: %s", keep, old, before)
	}
	if failed := len(before.Failed) + len(during.Failed) + len(after.Failed); failed > 0 {
		t.Errorf("%d of %d connections failed (before the reload %d, while it applied %d, after %d); %s",
			failed, len(reqs), len(before.Failed), len(during.Failed), len(after.Failed), now())
	}
	if other := after.Only(keep, new); len(other) > 0 {
		t.Errorf("after the reload applied, connections were answered by %v; want %s and %s only", other, keep, new)
	}
	if after.Answers[new] == 0 {
		t.Errorf("the new backend %s answered none of the %d connections opened after the reload applied (%s)", new, after.Answered()+len(after.Failed), after)
	}
}

package testutil

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestLoadRecordsEveryRequest(t *testing.T) {
	var n atomic.Int64
	l := StartLoad(3, time.Millisecond, func() (string, error) {
		switch n.Add(1) % 3 {
		case 0:
			return "", errors.New("refused")
		case 1:
			return "a", nil
		}
		return "b", nil
	})
	deadline := time.Now().Add(5 * time.Second)
	for n.Load() < 30 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	mid := time.Now()
	reqs := l.Stop()
	if int64(len(reqs)) != n.Load() {
		t.Fatalf("%d requests recorded, %d made", len(reqs), n.Load())
	}
	for i := 1; i < len(reqs); i++ {
		if reqs[i].Start.Before(reqs[i-1].Start) {
			t.Fatal("requests not in start order")
		}
	}
	all := TallyOf(reqs, time.Time{}, time.Time{})
	if all.Answered()+len(all.Failed) != len(reqs) || len(all.Failed) == 0 || all.Answers["a"] == 0 || all.Answers["b"] == 0 {
		t.Errorf("tally of %d requests: %s", len(reqs), all)
	}
	if got := all.Only("a"); got["b"] != all.Answers["b"] || len(got) != 1 {
		t.Errorf("Only(a) = %v, want b only", got)
	}
	before, after := TallyOf(reqs, time.Time{}, mid), TallyOf(reqs, mid, time.Time{})
	if before.Answered()+after.Answered() != all.Answered() || len(before.Failed)+len(after.Failed) != len(all.Failed) {
		t.Errorf("split at a time: %s + %s != %s", before, after, all)
	}
	if s := all.String(); !strings.Contains(s, "failed; ") || !strings.Contains(s, "refused") {
		t.Errorf("String() = %q, want the failures' errors", s)
	}
}

// Package logging makes the daemon's logger: logfmt lines on stderr, and, when stderr is
// systemd's journal, lines without a timestamp (the journal stamps each line itself) that
// start with a syslog priority prefix, so `journalctl -p warning` selects by level.
package logging

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
)

// New returns the logger for w. toJournal selects the journal format (see Journal).
func New(w io.Writer, toJournal bool) *slog.Logger {
	if toJournal {
		return slog.New(Journal(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}

// StderrIsJournal says whether this process's stderr is connected to the journal
// ($JOURNAL_STREAM names stderr's device and inode).
func StderrIsJournal() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok
}

// Default is New on stderr, in the journal format when stderr is the journal.
func Default() *slog.Logger { return New(os.Stderr, StderrIsJournal()) }

// Journal returns a handler writing logfmt lines to w, each prefixed with the sd-daemon(3)
// priority of its level (<3> error, <4> warning, <6> info, <7> debug) and with no time
// attribute.
func Journal(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	o := slog.HandlerOptions{}
	if opts != nil {
		o = *opts
	}
	next := o.ReplaceAttr
	o.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		if next != nil {
			return next(groups, a)
		}
		return a
	}
	s := &journalSink{w: w}
	return &journalHandler{s: s, h: slog.NewTextHandler(&s.buf, &o)}
}

// journalSink is the output every handler derived from one Journal handler shares: a
// record is formatted into buf and written with its prefix in one Write, under mu.
type journalSink struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
}

type journalHandler struct {
	s *journalSink
	h slog.Handler // writes into s.buf
}

func (j *journalHandler) Enabled(ctx context.Context, l slog.Level) bool { return j.h.Enabled(ctx, l) }

func (j *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	j.s.mu.Lock()
	defer j.s.mu.Unlock()
	j.s.buf.Reset()
	j.s.buf.WriteString(priority(r.Level))
	if err := j.h.Handle(ctx, r); err != nil {
		return err
	}
	_, err := j.s.w.Write(j.s.buf.Bytes())
	return err
}

func (j *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{s: j.s, h: j.h.WithAttrs(as)}
}

func (j *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{s: j.s, h: j.h.WithGroup(name)}
}

// priority is the sd-daemon(3) prefix of a level.
func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "<3>"
	case l >= slog.LevelWarn:
		return "<4>"
	case l >= slog.LevelInfo:
		return "<6>"
	default:
		return "<7>"
	}
}

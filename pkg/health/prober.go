package health

import (
	"context"
	"hash/fnv"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Target is one thing to probe.
type Target struct {
	Key     string
	Addr    netip.AddrPort // the backend's address:port, as logs name it
	Dial    netip.AddrPort // what the probe connects to (VIP:port for a tunnel check); zero: Addr
	Mark    uint32         // SO_MARK on the probe's socket; 0: none
	Path    string         // a label of the caller's ("direct", "tunnel"), echoed in Status and Result
	Checker Checker
	Config  Config // Interval, Timeout, Rise, Fall are used here
}

// probe is where t's checks go.
func (t Target) probe() Probe {
	if t.Dial.IsValid() {
		return Probe{Addr: t.Dial, Mark: t.Mark}
	}
	return Probe{Addr: t.Addr, Mark: t.Mark}
}

// logAttrs name t in a log line: the dial address and mark only when they are set.
func (t Target) logAttrs() []any {
	a := []any{"key", t.Key, "addr", t.Addr}
	if t.Path != "" {
		a = append(a, "path", t.Path)
	}
	if t.Dial.IsValid() {
		a = append(a, "dial", t.Dial)
	}
	if t.Mark != 0 {
		a = append(a, "mark", t.Mark)
	}
	return a
}

// sameCheck reports whether t checks what o checks, the same way.
func (t Target) sameCheck(o Target) bool {
	return t.Addr == o.Addr && t.Dial == o.Dial && t.Mark == o.Mark && t.Path == o.Path && t.Config == o.Config
}

// Transition is a change of a target's state.
type Transition struct {
	Key string
	Up  bool
	At  time.Time
	Err error // the last error, when going down
}

// Prober runs the checks and reports transitions, and only transitions.
//
// Every target starts up: a restarted daemon must not empty rings that are carrying
// traffic. It goes down after Fall consecutive failures and up after Rise consecutive
// successes. First checks are staggered over one interval by a hash of the key.
type Prober struct {
	log    *slog.Logger
	notify func(Transition)

	onResult func(Result)

	mu      sync.Mutex
	ctx     context.Context
	running map[string]*probe
	trans   atomic.Uint64
}

type probe struct {
	t      Target
	cancel context.CancelFunc
	up     atomic.Bool

	mu   sync.Mutex
	last Status // the Last* fields
}

// Status is what an operator sees of one target's checks.
type Status struct {
	Up   bool
	Type string         // the check's type: tcp, http, https, udp
	Path string         // Target.Path
	Dial netip.AddrPort // what the probe connects to
	Mark uint32
	// LastAt is when the last check finished (zero: none yet), LastRTT how long the last
	// successful one took, connect and exchange.
	LastAt  time.Time
	LastRTT time.Duration
	// LastError is the last failed check's error ("" until one fails). A later success
	// keeps it, so an operator can see why a target flapped: compare LastErrorAt with
	// LastAt. A probe that Set restarts (new Dial, Mark, Path, Addr or Config) keeps
	// these two and starts LastAt and LastRTT afresh.
	LastError   string
	LastErrorAt time.Time
}

// Result is the outcome of one check, for metrics.
type Result struct {
	Key, Type, Path string
	RTT             time.Duration // around the Check call, failed or not
	Err             error
}

// NewProber returns a prober; nothing runs until Run.
func NewProber(logger *slog.Logger, notify func(Transition)) *Prober {
	return &Prober{log: logger.With("component", "health"), notify: notify, running: map[string]*probe{}}
}

// OnResult has fn called after every check, from the probe's goroutine: fn must not block.
// Call it before Run. A probe that Set has just replaced may report one last result.
func (p *Prober) OnResult(fn func(Result)) { p.onResult = fn }

// Set replaces the targets: new ones start, removed ones stop, unchanged ones keep their
// state. A target whose Addr, Dial, Mark, Path or Config changed restarts its probe and
// keeps its up state.
func (p *Prober) Set(targets []Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := map[string]bool{}
	for _, t := range targets {
		keep[t.Key] = true
		if old, ok := p.running[t.Key]; ok {
			if old.t.sameCheck(t) {
				continue
			}
			if old.cancel != nil {
				old.cancel()
			}
		}
		pr := &probe{t: t}
		pr.up.Store(true)
		if old, ok := p.running[t.Key]; ok {
			pr.up.Store(old.up.Load())
			old.mu.Lock()
			pr.last.LastError, pr.last.LastErrorAt = old.last.LastError, old.last.LastErrorAt
			old.mu.Unlock()
		}
		p.running[t.Key] = pr
		if p.ctx != nil {
			p.start(pr)
		}
	}
	for k, pr := range p.running {
		if !keep[k] {
			if pr.cancel != nil {
				pr.cancel()
			}
			delete(p.running, k)
		}
	}
}

// Run probes until ctx is done.
func (p *Prober) Run(ctx context.Context) error {
	p.mu.Lock()
	p.ctx = ctx
	for _, pr := range p.running {
		p.start(pr)
	}
	p.mu.Unlock()
	<-ctx.Done()
	return nil
}

// start runs pr's loop; p.mu held.
func (p *Prober) start(pr *probe) {
	ctx, cancel := context.WithCancel(p.ctx)
	pr.cancel = cancel
	go p.loop(ctx, pr)
}

// StaggerDelay is the delay before key's first check: in [0, interval).
func StaggerDelay(key string, interval time.Duration) time.Duration {
	if interval <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	return time.Duration(h.Sum64() % uint64(interval))
}

func (p *Prober) loop(ctx context.Context, pr *probe) {
	cfg := pr.t.Config.WithDefaults()
	timer := time.NewTimer(StaggerDelay(pr.t.Key, cfg.Interval))
	defer timer.Stop()
	ok, bad := 0, 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		start := time.Now()
		err := pr.t.Checker.Check(cctx, pr.t.probe())
		end := time.Now()
		cancel()
		if ctx.Err() != nil {
			return
		}
		pr.record(end, end.Sub(start), err)
		if p.onResult != nil {
			p.onResult(Result{Key: pr.t.Key, Type: cfg.Type, Path: pr.t.Path, RTT: end.Sub(start), Err: err})
		}
		if err == nil {
			ok, bad = ok+1, 0
			if !pr.up.Load() && ok >= cfg.Rise {
				p.transition(pr, true, nil)
			}
		} else {
			ok, bad = 0, bad+1
			if pr.up.Load() && bad >= cfg.Fall {
				p.transition(pr, false, err)
			}
		}
		timer.Reset(cfg.Interval)
	}
}

// transition records and reports a change. A probe that Set has replaced or removed
// reports nothing: its key may already belong to a new probe that starts up.
func (p *Prober) transition(pr *probe, up bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running[pr.t.Key] != pr {
		return
	}
	pr.up.Store(up)
	p.trans.Add(1)
	if up {
		p.log.Info("backend up", pr.t.logAttrs()...)
	} else {
		p.log.Info("backend down", append(pr.t.logAttrs(), "error", err)...)
	}
	p.notify(Transition{Key: pr.t.Key, Up: up, At: time.Now(), Err: err})
}

// State returns a target's state.
func (p *Prober) State(key string) (up, known bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr, ok := p.running[key]
	if !ok {
		return false, false
	}
	return pr.up.Load(), true
}

// record keeps the outcome of a check that finished at end.
func (pr *probe) record(end time.Time, rtt time.Duration, err error) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	pr.last.LastAt = end
	if err != nil {
		pr.last.LastError, pr.last.LastErrorAt = err.Error(), end
		return
	}
	pr.last.LastRTT = rtt
}

// Status returns a target's status.
func (p *Prober) Status(key string) (Status, bool) {
	p.mu.Lock()
	pr, ok := p.running[key]
	p.mu.Unlock()
	if !ok {
		return Status{}, false
	}
	pr.mu.Lock()
	st := pr.last
	pr.mu.Unlock()
	st.Up = pr.up.Load()
	st.Type = pr.t.Config.WithDefaults().Type
	st.Path = pr.t.Path
	pb := pr.t.probe()
	st.Dial, st.Mark = pb.Addr, pb.Mark
	return st, true
}

// Snapshot returns every target's state.
func (p *Prober) Snapshot() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]bool, len(p.running))
	for k, pr := range p.running {
		out[k] = pr.up.Load()
	}
	return out
}

// Transitions counts transitions since start.
func (p *Prober) Transitions() uint64 { return p.trans.Load() }

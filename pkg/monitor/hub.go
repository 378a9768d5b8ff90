package monitor

import (
	"sync"
)

// QueueLen is each watcher's queue: events beyond it, while the watcher does not read,
// are dropped for that watcher and counted in Lost.SlowClient.
const QueueLen = 1024

// Want is what the hub's watchers ask of the source.
type Want struct {
	// Flows: some watcher can take flow events. Without one, the source sends none.
	Flows bool
	// SampleEvery is the smallest 1-in-N a flow watcher asked for (1: every flow); 0
	// when Flows is false.
	SampleEvery uint32
}

// Hub fans a source's events out to its watchers. Publish never blocks: a watcher that
// does not keep up loses events, counted, and slows nobody. It keeps the last drops for
// the status page. The zero Hub is not usable: see NewHub.
type Hub struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool
	ring   []Event // the last drops, ring[next] the oldest once full
	next   int
	slow   uint64
	source Lost

	// wantMu orders the calls of onWant: each call reads the watchers' summary under it,
	// so the last call says what the watchers want now.
	wantMu   sync.Mutex
	onWant   func(Want)
	notified Want
}

// NewHub returns a hub that keeps the last recent drops (none if recent <= 0).
func NewHub(recent int) *Hub {
	return &Hub{subs: map[*Subscription]struct{}{}, ring: make([]Event, 0, max(recent, 0))}
}

// Subscription is one watcher: its events arrive on Events until Close (or the hub's
// Close) closes the channel.
type Subscription struct {
	hub    *Hub
	filter Filter
	ch     chan Event
	flows  uint64 // flow events that matched, for sampling; under hub.mu
	lost   uint64 // under hub.mu
	done   bool   // the channel is closed; under hub.mu
}

// Subscribe adds a watcher with a filter (see Filter.Validate; an invalid one matches as
// written). On a closed hub the subscription's channel is closed already.
func (h *Hub) Subscribe(f Filter) *Subscription {
	s := &Subscription{hub: h, filter: f, ch: make(chan Event, QueueLen)}
	h.mu.Lock()
	if h.closed {
		close(s.ch)
		s.done = true
		h.mu.Unlock()
		return s
	}
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	h.notifyWant()
	return s
}

// Events is the watcher's channel: closed when the subscription or the hub is closed.
func (s *Subscription) Events() <-chan Event { return s.ch }

// Filter is the filter the watcher subscribed with.
func (s *Subscription) Filter() Filter { return s.filter }

// Lost is how many events this watcher missed because its queue was full.
func (s *Subscription) Lost() uint64 {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.lost
}

// Close removes the watcher and closes its channel. It may be called more than once.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	if s.done {
		h.mu.Unlock()
		return
	}
	s.done = true
	delete(h.subs, s)
	close(s.ch) // Publish sends under mu, only to watchers in subs: none will to s
	h.mu.Unlock()
	h.notifyWant()
}

// Close ends every subscription (their channels close, so whoever streams them returns)
// and makes later ones closed at once; Publish becomes a no-op. A daemon calls it when it
// stops, so that its API server is not kept waiting by watchers.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	subs := h.subs
	h.subs = map[*Subscription]struct{}{}
	for s := range subs {
		s.done = true
		close(s.ch)
	}
	h.mu.Unlock()
	h.notifyWant()
}

// Publish hands an event to every watcher whose filter takes it, and keeps it among the
// recent drops if it is one. It never blocks. The hub and its watchers share e.Data: the
// caller must not change it afterwards.
func (h *Hub) Publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	if e.Type == Drop && cap(h.ring) > 0 {
		if len(h.ring) < cap(h.ring) {
			h.ring = append(h.ring, e)
		} else {
			h.ring[h.next] = e
			h.next = (h.next + 1) % len(h.ring)
		}
	}
	source := h.wantLocked().SampleEvery
	for s := range h.subs {
		if !s.filter.Match(e) {
			continue
		}
		// The socket LB's connects are sampled by its own setting, not by the watchers'.
		if e.Type == Flow && e.Source != "socket" && !s.sample(source) {
			continue
		}
		select {
		case s.ch <- e:
		default:
			s.lost++
			h.slow++
		}
	}
}

// sample says whether a matching flow event goes to the watcher: the source already sends
// one flow in source, so the watcher takes one of every N/source of those. Under hub.mu.
func (s *Subscription) sample(source uint32) bool {
	every := uint64(1)
	if source > 0 {
		every = max(uint64(s.filter.sampleEvery()/source), 1)
	}
	s.flows++
	return (s.flows-1)%every == 0
}

// RecentDrops returns the last drops, oldest first. Their Data is shared: do not change it.
func (h *Hub) RecentDrops() []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Event, 0, len(h.ring))
	out = append(out, h.ring[h.next:]...)
	return append(out, h.ring[:h.next]...)
}

// SetSourceLost records the source's own loss counters (its totals, not increments).
func (h *Hub) SetSourceLost(l Lost) {
	h.mu.Lock()
	h.source = l
	h.mu.Unlock()
}

// Lost is the source's loss counters with the hub's slow watchers added.
func (h *Hub) Lost() Lost {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.source
	l.SlowClient += h.slow
	return l
}

// Watchers is the number of subscriptions open.
func (h *Hub) Watchers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// OnWant sets the function told what the watchers want: called once now, with the
// current summary, and then on every change of it (a watcher came or went), one call at a
// time, in order. f must not subscribe or close a subscription itself. nil stops the calls.
func (h *Hub) OnWant(f func(Want)) {
	h.wantMu.Lock()
	defer h.wantMu.Unlock()
	h.onWant = f
	h.mu.Lock()
	w := h.wantLocked()
	h.mu.Unlock()
	h.notified = w
	if f != nil {
		f(w)
	}
}

// Want is what the watchers ask of the source now.
func (h *Hub) Want() Want {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.wantLocked()
}

func (h *Hub) wantLocked() Want {
	var w Want
	for s := range h.subs {
		if !s.filter.WantsFlows() {
			continue
		}
		n := s.filter.sampleEvery()
		if !w.Flows || n < w.SampleEvery {
			w = Want{Flows: true, SampleEvery: n}
		}
	}
	return w
}

func (h *Hub) notifyWant() {
	h.wantMu.Lock()
	defer h.wantMu.Unlock()
	h.mu.Lock()
	w := h.wantLocked()
	h.mu.Unlock()
	if w == h.notified {
		return
	}
	h.notified = w
	if h.onWant != nil {
		h.onWant(w)
	}
}

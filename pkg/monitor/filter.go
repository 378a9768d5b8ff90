package monitor

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// ErrBadFilter is the error of a filter that cannot be parsed; the message names the
// parameter.
var ErrBadFilter = errors.New("bad filter")

// FlowReasons are the reasons of Flow events, in the order the docs list them.
var FlowReasons = []string{ReasonNewFlow, ReasonMissNonSYN, ReasonMoved, ReasonSockConnect}

// MaxSampleEvery bounds a filter's 1-in-N: beyond it a watcher would see nothing.
const MaxSampleEvery = 1 << 24

// Filter selects the events a watcher gets. The zero Filter takes every event, and flow
// events unsampled (subject to the data plane's rate limit).
type Filter struct {
	// VIP is a VIP's name in the configuration ("" any).
	VIP string
	// Reason is a drop's counter name or a flow reason, exactly ("" any).
	Reason string
	// Src takes events whose source address it contains (the zero Prefix: any).
	Src netip.Prefix
	// Type is Drop, Flow or "" for both.
	Type Type
	// SampleEvery asks for one flow event in N (0 or 1: every one). Drops are never
	// sampled: the data plane reports each, up to its rate limit.
	SampleEvery uint32
}

// ParseFilter reads a filter from URL query values: vip, reason, src (a prefix or an
// address), type (drop, flow) and sample (N: one flow in N). A parameter given twice or
// not known is an error, so a typo does not widen the filter silently.
func ParseFilter(q url.Values) (Filter, error) {
	known := []string{"vip", "reason", "src", "type", "sample"}
	for k, vs := range q {
		if !slices.Contains(known, k) {
			return Filter{}, fmt.Errorf("%w: unknown parameter %q (want %s)", ErrBadFilter, k, strings.Join(known, ", "))
		}
		if len(vs) > 1 {
			return Filter{}, fmt.Errorf("%w: %s given %d times", ErrBadFilter, k, len(vs))
		}
	}
	var f Filter
	f.VIP = q.Get("vip")
	f.Reason = q.Get("reason")
	if s := q.Get("src"); s != "" {
		p, err := parsePrefix(s)
		if err != nil {
			return Filter{}, fmt.Errorf("%w: src %q: want a prefix (198.51.100.0/24, 2001:db8::/32) or an address", ErrBadFilter, s)
		}
		f.Src = p
	}
	switch t := Type(q.Get("type")); t {
	case "", Drop, Flow:
		f.Type = t
	default:
		return Filter{}, fmt.Errorf("%w: type %q: want drop or flow", ErrBadFilter, t)
	}
	if s := q.Get("sample"); s != "" {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil || n == 0 || n > MaxSampleEvery {
			return Filter{}, fmt.Errorf("%w: sample %q: want N from 1 to %d (one flow event in N)", ErrBadFilter, s, MaxSampleEvery)
		}
		f.SampleEvery = uint32(n)
	}
	if err := f.Validate(); err != nil {
		return Filter{}, err
	}
	return f, nil
}

// Validate checks that the filter's parts agree: a filter that could match nothing
// is a mistake worth saying.
func (f Filter) Validate() error {
	flowReason := slices.Contains(FlowReasons, f.Reason)
	switch {
	case f.Type != "" && f.Type != Drop && f.Type != Flow:
		return fmt.Errorf("%w: type %q: want drop or flow", ErrBadFilter, f.Type)
	case f.Type == Drop && f.SampleEvery > 1:
		return fmt.Errorf("%w: sample: only flow events are sampled, and type is drop", ErrBadFilter)
	case f.Type == Flow && f.Reason != "" && !flowReason:
		return fmt.Errorf("%w: reason %q is not a flow reason (%s), and type is flow", ErrBadFilter, f.Reason, strings.Join(FlowReasons, ", "))
	case f.Type == Drop && flowReason:
		return fmt.Errorf("%w: reason %q is a flow reason, and type is drop", ErrBadFilter, f.Reason)
	case f.SampleEvery > MaxSampleEvery:
		return fmt.Errorf("%w: sample %d: want N from 1 to %d", ErrBadFilter, f.SampleEvery, MaxSampleEvery)
	}
	return nil
}

// Query is the filter as URL query values, what ParseFilter reads.
func (f Filter) Query() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("vip", f.VIP)
	set("reason", f.Reason)
	if f.Src.IsValid() {
		q.Set("src", f.Src.String())
	}
	set("type", string(f.Type))
	if f.SampleEvery > 0 {
		q.Set("sample", strconv.FormatUint(uint64(f.SampleEvery), 10))
	}
	return q
}

// parsePrefix reads a prefix, or an address as its /32 or /128, masked.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Match says whether the event passes the filter. Sampling is not part of it: the hub
// thins flow events per watcher.
func (f Filter) Match(e Event) bool {
	if f.Type != "" && e.Type != f.Type {
		return false
	}
	if f.VIP != "" && e.VIP != f.VIP {
		return false
	}
	if f.Reason != "" && e.Reason != f.Reason {
		return false
	}
	if f.Src.IsValid() {
		a := e.Src.Addr()
		if !a.IsValid() {
			return false
		}
		if f.Src.Addr().Is4() {
			a = a.Unmap() // ::ffff:198.51.100.7 is 198.51.100.7
		}
		if !f.Src.Contains(a) {
			return false
		}
	}
	return true
}

// WantsFlows says whether a watcher with this filter can get flow events: if no watcher
// can, the data plane need not send any.
func (f Filter) WantsFlows() bool {
	switch f.Type {
	case Flow:
		return true
	case Drop:
		return false
	}
	return f.Reason == "" || slices.Contains(FlowReasons, f.Reason)
}

// sampleEvery is the filter's 1-in-N for flows, at least 1.
func (f Filter) sampleEvery() uint32 {
	return max(f.SampleEvery, 1)
}

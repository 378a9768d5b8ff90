package iptables

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/l4lb/l4lb/pkg/lb"
)

// Every chain l4lb creates starts with chainPrefix; nothing else is written but one jump
// to each from its built-in chain.
const (
	chainPrefix = "L4LB-"
	chainCount  = "L4LB-COUNT"       // mangle PREROUTING: per-VIP packets and bytes
	chainDNAT   = "L4LB-PREROUTING"  // nat PREROUTING: dispatch to the VIP's chain
	chainMasq   = "L4LB-POSTROUTING" // nat POSTROUTING: masquerade DNATed VIP flows
	chainFwd    = "L4LB-FORWARD"     // filter FORWARD: per-backend packets and bytes
	tagJump     = "l4lb jump"
)

func vipChain(id uint32) string { return fmt.Sprintf("L4LB-V%d", id) }

// The comments rules carry: they name what a rule is for, so a restarted daemon and the
// counters find them.
func tagDispatch(k lb.VIPKey, e vipEntry) string {
	return fmt.Sprintf("l4lb vip %s %d %d id=%d flags=%d", k.Addr, k.Port, k.Proto, e.id, e.vip.Flags)
}
func tagVIPCount(id uint32) string  { return fmt.Sprintf("l4lb vcount %d", id) }
func tagNoBackend(id uint32) string { return fmt.Sprintf("l4lb nobackend %d", id) }
func tagDNAT(vipID uint32, b lb.Backend) string {
	return fmt.Sprintf("l4lb be %d %d %s", vipID, b.ID, b.Addr)
}
func tagAffinity(vipID uint32, b lb.Backend) string {
	return fmt.Sprintf("l4lb aff %d %d %s", vipID, b.ID, b.Addr)
}

// affinitySeconds is how long a client of a hash_no_source_port VIP keeps its backend
// after its last new connection (kube-proxy's default for ClientIP affinity).
const affinitySeconds = 10800

func tagMasq(a netip.Addr) string { return fmt.Sprintf("l4lb masq %s", a) }
func tagBackendCount(id uint32, a netip.Addr) string {
	return fmt.Sprintf("l4lb bcount %d %s", id, a)
}

type counter struct{ packets, bytes uint64 }

// state is l4lb's rules as iptables-save shows them (both families).
type state struct {
	vips     map[lb.VIPKey]vipEntry
	ready    map[lb.VIPKey]bool
	backends map[uint32]netip.Addr
	counters map[string]counter // by comment
	jumps    map[string]bool    // "family table chain"
	chains   map[string]bool    // "family table chain"
}

var reCounter = regexp.MustCompile(`^\[(\d+):(\d+)\] `)

func commentOf(line string) string {
	i := strings.Index(line, "--comment ")
	if i < 0 {
		return ""
	}
	rest := line[i+len("--comment "):]
	if strings.HasPrefix(rest, `"`) {
		rest = rest[1:]
		if j := strings.Index(rest, `"`); j >= 0 {
			return rest[:j]
		}
		return rest
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

func (d *Dataplane) read() (state, error) {
	s := state{vips: map[lb.VIPKey]vipEntry{}, ready: map[lb.VIPKey]bool{}, backends: map[uint32]netip.Addr{},
		counters: map[string]counter{}, jumps: map[string]bool{}, chains: map[string]bool{}}
	type beRule struct {
		vipID uint32
		b     lb.Backend
	}
	var bes []beRule
	byID := map[uint32]lb.VIPKey{}
	masq := map[netip.Addr]bool{}
	for _, fam := range families {
		out, err := d.run(fam.save, nil, "-c")
		if err != nil {
			return s, err
		}
		table := ""
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "*") {
				table = line[1:]
				continue
			}
			if strings.HasPrefix(line, ":"+chainPrefix) {
				s.chains[fam.name+" "+table+" "+strings.Fields(line[1:])[0]] = true
				continue
			}
			var c counter
			if m := reCounter.FindStringSubmatch(line); m != nil {
				c = counter{atou(m[1]), atou(m[2])}
				line = line[len(m[0]):]
			}
			if !strings.HasPrefix(line, "-A ") {
				continue
			}
			chain := strings.Fields(line)[1]
			tag := commentOf(line)
			if tag == tagJump {
				if j := strings.Index(line, "-j "); j >= 0 {
					s.jumps[fam.name+" "+table+" "+chain+" "+strings.Fields(line[j+3:])[0]] = true
				}
				continue
			}
			if !strings.HasPrefix(chain, chainPrefix) || !strings.HasPrefix(tag, "l4lb ") {
				continue
			}
			key, w, _ := strings.Cut(tag, " w=")
			s.counters[key] = counter{s.counters[key].packets + c.packets, s.counters[key].bytes + c.bytes}
			f := strings.Fields(key)
			switch {
			case f[1] == "vip" && len(f) == 7:
				a, err := netip.ParseAddr(f[2])
				port, _ := strconv.ParseUint(f[3], 10, 16)
				proto, _ := strconv.ParseUint(f[4], 10, 8)
				id, _ := strconv.ParseUint(strings.TrimPrefix(f[5], "id="), 10, 32)
				flags, _ := strconv.ParseUint(strings.TrimPrefix(f[6], "flags="), 10, 32)
				if err != nil {
					continue
				}
				k := lb.VIPKey{Addr: a, Port: uint16(port), Proto: lb.Proto(proto)}
				s.vips[k] = vipEntry{id: uint32(id), vip: lb.VIP{Key: k, Flags: lb.VIPFlags(flags)}}
				byID[uint32(id)] = k
			case f[1] == "be" && len(f) == 5:
				vid, _ := strconv.ParseUint(f[2], 10, 32)
				bid, _ := strconv.ParseUint(f[3], 10, 32)
				a, err := netip.ParseAddr(f[4])
				wt, _ := strconv.ParseUint(w, 10, 32)
				if err == nil {
					bes = append(bes, beRule{uint32(vid), lb.Backend{ID: uint32(bid), Addr: a, Weight: uint32(wt)}})
				}
			case f[1] == "masq" && len(f) == 3:
				if a, err := netip.ParseAddr(f[2]); err == nil {
					masq[a] = true
				}
			case f[1] == "bcount" && len(f) == 4:
				bid, _ := strconv.ParseUint(f[2], 10, 32)
				if a, err := netip.ParseAddr(f[3]); err == nil {
					s.backends[uint32(bid)] = a
				}
			}
		}
	}
	for _, r := range bes {
		if k, ok := byID[r.vipID]; ok {
			e := s.vips[k]
			e.vip.Backends = append(e.vip.Backends, r.b)
			s.vips[k] = e
		}
	}
	for k, e := range s.vips {
		fam := "ipv4"
		if k.Addr.Is6() {
			fam = "ipv6"
		}
		_, counted := s.counters[tagVIPCount(e.id)]
		s.ready[k] = counted && masq[k.Addr] && s.chains[fam+" nat "+vipChain(e.id)] && len(e.vip.Backends) > 0 &&
			s.jumps[fam+" nat PREROUTING "+chainDNAT] && s.jumps[fam+" nat POSTROUTING "+chainMasq] &&
			s.jumps[fam+" mangle PREROUTING "+chainCount]
	}
	// A backend is held if its counting rule and the filter jump are there.
	for id := range s.backends {
		a := s.backends[id]
		fam := "ipv4"
		if a.Is6() {
			fam = "ipv6"
		}
		if !s.jumps[fam+" filter FORWARD "+chainFwd] {
			delete(s.backends, id)
		}
	}
	return s, nil
}

// render returns the iptables-restore --noflush --counters input that makes one family's
// L4LB chains hold exactly vips and backends: every L4LB chain is declared (so flushed)
// and written whole, counters carried over by comment, jumps from the built-in chains
// added only where missing, chains of removed VIPs deleted.
func render(six bool, vips map[lb.VIPKey]vipEntry, backends map[uint32]netip.Addr, s state) string {
	fam := "ipv4"
	host := "/32"
	if six {
		fam, host = "ipv6", "/128"
	}
	var ks []lb.VIPKey
	for k := range vips {
		if k.Addr.Is6() == six {
			ks = append(ks, k)
		}
	}
	sort.Slice(ks, func(i, j int) bool { return vips[ks[i]].id < vips[ks[j]].id })
	var ids []uint32
	for id, a := range backends {
		if a.Is6() == six {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })

	var b strings.Builder
	rule := func(tag, format string, args ...any) {
		key, _, _ := strings.Cut(tag, " w=")
		c := s.counters[key]
		fmt.Fprintf(&b, "[%d:%d] ", c.packets, c.bytes)
		fmt.Fprintf(&b, format, args...)
		fmt.Fprintf(&b, " -m comment --comment %q", tag)
		b.WriteString("\n")
	}
	jump := func(table, builtin, chain string) {
		if !s.jumps[fam+" "+table+" "+builtin+" "+chain] {
			fmt.Fprintf(&b, "-I %s -m comment --comment %q -j %s\n", builtin, tagJump, chain)
		}
	}
	match := func(k lb.VIPKey) string {
		m := fmt.Sprintf("-d %s%s -p %s", k.Addr, host, k.Proto)
		if k.Port != 0 {
			m += fmt.Sprintf(" -m %s --dport %d", k.Proto, k.Port)
		}
		return m
	}

	b.WriteString("*mangle\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n", chainCount)
	jump("mangle", "PREROUTING", chainCount)
	for _, k := range ks {
		rule(tagVIPCount(vips[k].id), "-A %s %s", chainCount, match(k))
	}
	b.WriteString("COMMIT\n")

	b.WriteString("*nat\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", chainDNAT, chainMasq)
	want := map[string]bool{}
	for _, k := range ks {
		want[vipChain(vips[k].id)] = true
		fmt.Fprintf(&b, ":%s - [0:0]\n", vipChain(vips[k].id))
	}
	var stale []string
	for c := range s.chains {
		if name, ok := strings.CutPrefix(c, fam+" nat "); ok && strings.HasPrefix(name, "L4LB-V") && !want[name] {
			stale = append(stale, name)
		}
	}
	sort.Strings(stale)
	for _, c := range stale {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	jump("nat", "PREROUTING", chainDNAT)
	jump("nat", "POSTROUTING", chainMasq)
	masq := map[netip.Addr]bool{}
	for _, k := range ks {
		e := vips[k]
		rule(tagDispatch(k, e), "-A %s %s -j %s", chainDNAT, match(k), vipChain(e.id))
		// kube-proxy's statistic mode: backend i takes w_i / (w_i + ... + w_n) of what
		// the backends before it left.
		var rest uint64
		for _, be := range e.vip.Backends {
			rest += uint64(be.Weight)
		}
		last := -1
		for i, be := range e.vip.Backends {
			if be.Weight > 0 {
				last = i
			}
		}
		// hash_no_source_port: statistic mode cannot hash, so a client keeps the backend
		// its first connection drew (kube-proxy's ClientIP affinity, xt_recent), as long
		// as that backend takes new flows.
		sticky := e.vip.Flags&lb.FlagHashNoSourcePort != 0
		recent := func(be lb.Backend) string { return fmt.Sprintf("%s-B%d", vipChain(e.id), be.ID) }
		set := func(be lb.Backend) string {
			if !sticky {
				return ""
			}
			return fmt.Sprintf(" -m recent --set --name %s --rsource", recent(be))
		}
		if sticky {
			for _, be := range e.vip.Backends {
				if be.Weight > 0 {
					rule(tagAffinity(e.id, be), "-A %s -m recent --rcheck --seconds %d --reap --name %s --rsource -j DNAT --to-destination %s",
						vipChain(e.id), affinitySeconds, recent(be), be.Addr)
				}
			}
		}
		for i, be := range e.vip.Backends {
			tag := fmt.Sprintf("%s w=%d", tagDNAT(e.id, be), be.Weight)
			switch {
			case be.Weight == 0:
				// No new flows; the rule keeps the backend's weight and counter.
				rule(tag, "-A %s -m statistic --mode random --probability 0.0000000000", vipChain(e.id))
			case i == last:
				rule(tag, "-A %s%s -j DNAT --to-destination %s", vipChain(e.id), set(be), be.Addr)
			default:
				rule(tag, "-A %s -m statistic --mode random --probability %.10f%s -j DNAT --to-destination %s",
					vipChain(e.id), float64(be.Weight)/float64(rest), set(be), be.Addr)
			}
			rest -= uint64(be.Weight)
		}
		if !masq[k.Addr] {
			masq[k.Addr] = true
			rule(tagMasq(k.Addr), "-A %s -m conntrack --ctstate DNAT --ctorigdst %s%s -j MASQUERADE", chainMasq, k.Addr, host)
		}
	}
	for _, c := range stale {
		fmt.Fprintf(&b, "-X %s\n", c)
	}
	b.WriteString("COMMIT\n")

	b.WriteString("*filter\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n", chainFwd)
	jump("filter", "FORWARD", chainFwd)
	for _, id := range ids {
		rule(tagBackendCount(id, backends[id]), "-A %s -d %s%s -m conntrack --ctstate DNAT", chainFwd, backends[id], host)
	}
	// A new flow no backend took (every weight 0) still has the VIP as its destination
	// here; the nat table cannot drop, this chain can.
	for _, k := range ks {
		rule(tagNoBackend(vips[k].id), "-A %s %s -j DROP", chainFwd, match(k))
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

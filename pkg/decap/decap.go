// Package decap owns the backend side of direct server return (`l4lb decap`): it loads
// bpf/decap.c, which strips the load balancers' IPIP / ip6ip6 / 4in6 headers from packets
// to this host's VIPs, and attaches it to an interface.
package decap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/l4lb/l4lb/internal/bpfobj"
)

// Decap is the backend-side program (bpf/decap.c): it strips IPIP, ip6ip6 and 4in6 outer
// headers from packets whose inner destination is a local VIP and whose outer source is
// allowed (AllowFrom), and passes them on. Encapsulated packets to a local VIP from any
// other outer source are dropped and counted (drop_source_not_allowed): a freshly loaded
// Decap allows none.
type Decap struct {
	objs  decapObjects
	links []link.Link
}

// Load loads the decap program; it attaches nothing.
func Load() (*Decap, error) {
	var d Decap
	if err := loadDecapObjects(&d.objs, nil); err != nil {
		return nil, bpfobj.DescribeLoad("decap", err)
	}
	return &d, nil
}

// AddVIP makes addr a local VIP: encapsulated packets to it are decapsulated.
func (d *Decap) AddVIP(addr netip.Addr) error {
	if !addr.IsValid() {
		return errors.New("add local vip: invalid address")
	}
	a, fam := bpfobj.Addr16(addr)
	k := decapVipKey{Addr: a, Family: fam}
	if err := d.objs.LocalVips.Put(&k, uint32(1)); err != nil {
		return fmt.Errorf("add local vip %s: %w", addr, err)
	}
	return nil
}

// AllowFrom lets encapsulated packets whose outer source is in p reach the local VIPs: p
// is where the load balancers encapsulate from. 0.0.0.0/0 or ::/0 allow any source of
// that family.
func (d *Decap) AllowFrom(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("allow decap source: invalid prefix")
	case p.Addr().Is4In6():
		return fmt.Errorf("allow decap source %s: a v4-mapped prefix; give the ipv4 prefix", p)
	}
	p = p.Masked()
	var err error
	if p.Addr().Is4() {
		err = d.objs.AllowSrc4.Put(&decapDecapSrc4Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()}, uint32(1))
	} else {
		err = d.objs.AllowSrc6.Put(&decapDecapSrc6Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}, uint32(1))
	}
	if err != nil {
		return fmt.Errorf("allow decap source %s: %w", p, err)
	}
	return nil
}

// Program returns the decap program (tests, benchmarks).
func (d *Decap) Program() *ebpf.Program { return d.objs.XdpDecap }

// Attach attaches the decap program to ifname (native XDP, generic as a fallback) until
// Close.
func (d *Decap) Attach(ifname string) (string, error) {
	return d.attach(d.objs.XdpDecap, ifname)
}

// AttachPass attaches a program that passes everything: a veth only delivers frames that
// its peer sent with XDP_TX when it has an XDP program itself.
func (d *Decap) AttachPass(ifname string) (string, error) {
	return d.attach(d.objs.XdpPass, ifname)
}

func (d *Decap) attach(p *ebpf.Program, ifname string) (string, error) {
	iface, err := net.InterfaceByName(ifname)
	if err != nil {
		return "", fmt.Errorf("attach xdp to %s: %w", ifname, err)
	}
	mode := "native"
	l, err := link.AttachXDP(link.XDPOptions{Program: p, Interface: iface.Index, Flags: link.XDPDriverMode})
	if err != nil {
		mode = "generic"
		l, err = link.AttachXDP(link.XDPOptions{Program: p, Interface: iface.Index, Flags: link.XDPGenericMode})
		if err != nil {
			return "", fmt.Errorf("attach xdp to %s: %w", ifname, err)
		}
	}
	d.links = append(d.links, l)
	return mode, nil
}

// Stats returns the decap counters summed over CPUs.
func (d *Decap) Stats() (map[string]uint64, error) {
	return bpfobj.SumCounters(d.objs.DecapStats, statNames[:])
}

// Close detaches and releases everything.
func (d *Decap) Close() error {
	var errs []error
	for _, l := range d.links {
		errs = append(errs, l.Close())
	}
	d.links = nil
	errs = append(errs, d.objs.Close())
	return errors.Join(errs...)
}

// Every decap counter has a name: the build fails when decap.c's enum grows alone.
var _ = [1]struct{}{}[len(statNames)-int(decapDecapStatIdDECAP_STAT__MAX)]

var statNames = [...]string{
	decapDecapStatIdDECAP_STAT_OK:             "decap_ok",
	decapDecapStatIdDECAP_STAT_PASS_NOT_ENCAP: "pass_not_encap",
	decapDecapStatIdDECAP_STAT_PASS_NOT_LOCAL: "pass_not_local_vip",
	decapDecapStatIdDECAP_STAT_DROP_MALFORMED: "drop_malformed",
	decapDecapStatIdDECAP_STAT_PASS_FRAGMENT:  "pass_fragment",
	decapDecapStatIdDECAP_STAT_DROP_ADJUST:    "drop_adjust",
	decapDecapStatIdDECAP_STAT_DROP_SOURCE:    "drop_source_not_allowed",
	decapDecapStatIdDECAP_STAT_DROP_ECN:       "drop_ecn_ce_not_ect",
	decapDecapStatIdDECAP_STAT_ECN_CE:         "ecn_ce_from_outer",
}

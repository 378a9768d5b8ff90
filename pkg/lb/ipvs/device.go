package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// errNoService is IPVS's answer for a service that does not exist.
var errNoService = unix.ESRCH

// ensureDevice creates the dummy VIP device (Options.Device) if it is missing and sets
// it up.
func (d *Dataplane) ensureDevice() error {
	if d.opts.Device == "" {
		return nil
	}
	l, err := d.nl.LinkByName(d.opts.Device)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = d.opts.Device
		if err := d.nl.LinkAdd(&netlink.Dummy{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create vip device %s: %w", d.opts.Device, err)
		}
		l, err = d.nl.LinkByName(d.opts.Device)
	}
	if err != nil {
		return fmt.Errorf("find vip device %s: %w", d.opts.Device, err)
	}
	if l.Type() != "dummy" {
		return fmt.Errorf("vip device %s is a %s, not the dummy device l4lb creates: choose another ipvs.vip_device", d.opts.Device, l.Type())
	}
	if err := d.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", d.opts.Device, err)
	}
	return nil
}

func hostPrefix(a netip.Addr) *netlink.Addr {
	bits := 32
	if is6(a) {
		bits = 128
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}, Flags: unix.IFA_F_NODAD}
}

// addAddr puts a VIP address on the VIP device (d.mu held).
func (d *Dataplane) addAddr(a netip.Addr) error {
	if d.opts.Device == "" {
		return nil
	}
	if err := d.ensureDevice(); err != nil {
		return err
	}
	l, err := d.nl.LinkByName(d.opts.Device)
	if err != nil {
		return fmt.Errorf("find vip device %s: %w", d.opts.Device, err)
	}
	if err := d.nl.AddrReplace(l, hostPrefix(a)); err != nil {
		return fmt.Errorf("add %s to %s: %w", a, d.opts.Device, err)
	}
	return nil
}

// delAddrUnused removes a VIP address from the VIP device if no service of l4lb's uses
// it any more (d.mu held).
func (d *Dataplane) delAddrUnused(a netip.Addr) error {
	if d.opts.Device == "" {
		return nil
	}
	for _, r := range d.state.Services {
		if r.Addr == a {
			return nil
		}
	}
	l, err := d.nl.LinkByName(d.opts.Device)
	if err != nil {
		return nil // no device, no address
	}
	if err := d.nl.AddrDel(l, hostPrefix(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove %s from %s: %w", a, d.opts.Device, err)
	}
	return nil
}

// deleteDevice removes the VIP device; it returns its name if it removed it.
func (d *Dataplane) deleteDevice() (string, error) {
	if d.opts.Device == "" {
		return "", nil
	}
	l, err := d.nl.LinkByName(d.opts.Device)
	if err != nil {
		return "", nil
	}
	if l.Type() != "dummy" {
		return "", fmt.Errorf("vip device %s is a %s, not l4lb's: left alone", d.opts.Device, l.Type())
	}
	if err := d.nl.LinkDel(l); err != nil {
		return "", fmt.Errorf("delete vip device %s: %w", d.opts.Device, err)
	}
	return d.opts.Device, nil
}

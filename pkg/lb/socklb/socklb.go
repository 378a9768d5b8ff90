package socklb

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/l4lb/l4lb/pkg/lb/probe"
	"github.com/l4lb/l4lb/pkg/lb/xdp"
)

// Sentinel errors.
var (
	ErrNotShared = errors.New("map not shared by the xdp data plane")
	ErrAttached  = errors.New("already attached")
)

// linkPrefix names the pinned cgroup links under the bpffs directory (the XDP links are
// link_IFNAME; these never collide with an interface name, which has no '@').
const linkPrefix = "sock_link@"

// hook is one cgroup sock_addr attach point and the program for it.
type hook struct {
	name string
	typ  ebpf.AttachType
	prog func(*socklbPrograms) *ebpf.Program
}

var hooks = []hook{
	{"connect4", ebpf.AttachCGroupInet4Connect, func(p *socklbPrograms) *ebpf.Program { return p.SockConnect4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(p *socklbPrograms) *ebpf.Program { return p.SockConnect6 }},
	{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(p *socklbPrograms) *ebpf.Program { return p.SockSendmsg4 }},
	{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(p *socklbPrograms) *ebpf.Program { return p.SockSendmsg6 }},
	{"recvmsg4", ebpf.AttachCGroupUDP4Recvmsg, func(p *socklbPrograms) *ebpf.Program { return p.SockRecvmsg4 }},
	{"recvmsg6", ebpf.AttachCGroupUDP6Recvmsg, func(p *socklbPrograms) *ebpf.Program { return p.SockRecvmsg6 }},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(p *socklbPrograms) *ebpf.Program { return p.SockGetpeername4 }},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername, func(p *socklbPrograms) *ebpf.Program { return p.SockGetpeername6 }},
}

// ownMaps are the maps sock_lb.c adds to the shared ones (pinned by name when pinning).
var ownMaps = []string{"sock_rev", "sock_vip_stats", "sock_events", "sock_monitor_state"}

// Options are fixed for the life of a loaded program.
type Options struct {
	// PinPath is the bpffs directory the XDP data plane pins in: the socket LB's own maps
	// and its cgroup links are pinned there too, so a restart keeps balancing. Empty:
	// nothing pinned, and closing detaches.
	PinPath string
	// Shared are the XDP data plane's maps and ring size (xdp.Dataplane.Shared).
	Shared xdp.Shared
	// SampleEvery: one translated connect in SampleEvery is reported (top clients);
	// 0 reports none. At 1 every connect is reported; the ring buffer drops what Go
	// does not read in time.
	SampleEvery uint32
	Logger      *slog.Logger
}

// Dataplane is the loaded socket LB programs.
type Dataplane struct {
	opts Options
	log  *slog.Logger
	objs socklbObjects

	mu     sync.Mutex
	links  map[string]link.Link
	cgroup string

	clients *clients
	sink    func(Event) // SetEventSink
}

// Load loads sock_lb.c with the XDP data plane's maps in place of the shared maps it
// declares (bpf/lb_maps.h), so both programs read one set of VIPs, backends and rings. It
// attaches nothing.
func Load(opts Options) (*Dataplane, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if len(opts.Shared.Maps) == 0 {
		return nil, fmt.Errorf("load sock_lb: no shared xdp maps given")
	}
	spec, err := loadSocklb()
	if err != nil {
		return nil, fmt.Errorf("load sock_lb spec: %w", err)
	}
	// The tunnel health probes' marks: those sockets connect to the VIP itself.
	for name, v := range map[string]any{"sample_every": opts.SampleEvery, "probe_mark": probe.DefaultMark} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	copts := ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{}}
	own := map[string]bool{}
	for _, n := range ownMaps {
		own[n] = true
	}
	for name, ms := range spec.Maps {
		if own[name] {
			if opts.PinPath == "" {
				ms.Pinning = ebpf.PinNone
			}
			continue
		}
		if strings.HasPrefix(name, ".") { // .rodata and friends
			continue
		}
		m, ok := opts.Shared.Maps[name]
		if !ok {
			return nil, fmt.Errorf("load sock_lb: %s: %w", name, ErrNotShared)
		}
		// The XDP loader sized some maps at load time (rings from the VIPs' ring sizes):
		// the replacement must match the spec.
		ms.MaxEntries = m.MaxEntries()
		copts.MapReplacements[name] = m
	}
	if opts.PinPath != "" {
		if err := os.MkdirAll(opts.PinPath, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
		copts.Maps.PinPath = opts.PinPath
	}
	d := &Dataplane{opts: opts, log: opts.Logger.With("component", "socklb"), links: map[string]link.Link{}, clients: newClients()}
	if err := spec.LoadAndAssign(&d.objs, &copts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load sock_lb: %w", errors.New(lastLines(fmt.Sprintf("%+v", ve), 20)))
		}
		return nil, fmt.Errorf("load sock_lb: %w", err)
	}
	return d, nil
}

// ResetOnNewVIP makes x reset this program's per-VIP state (counters, sampled clients)
// whenever it gives a new VIP an id, as it does its own counters.
func (d *Dataplane) ResetOnNewVIP(x *xdp.Dataplane) {
	x.OnNewVIPID(func(id uint32) error {
		d.clients.forget(id)
		return d.ResetCounters(id)
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Attach attaches every hook to the cgroup v2 directory path through bpf_links. With a
// PinPath the links are pinned, and links a previous run pinned on the same cgroup are
// updated to these programs instead, so balancing never stops across a restart. Links
// pinned on another cgroup are replaced.
func (d *Dataplane) Attach(path string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.links) > 0 {
		return fmt.Errorf("attach socket lb to %s: %w (to %s)", path, ErrAttached, d.cgroup)
	}
	id, err := cgroupID(path)
	if err != nil {
		return fmt.Errorf("attach socket lb: %w", err)
	}
	for _, h := range hooks {
		l, adopted, err := d.attachOne(h, path, id)
		if err != nil {
			d.detachLocked()
			return fmt.Errorf("attach socket lb %s to %s: %w", h.name, path, err)
		}
		d.links[h.name] = l
		if adopted {
			d.log.Debug("adopted pinned cgroup link", "hook", h.name, "cgroup", path)
		}
	}
	d.cgroup = path
	d.log.Info("attached socket lb", "cgroup", path)
	return nil
}

func (d *Dataplane) attachOne(h hook, path string, cgid uint64) (link.Link, bool, error) {
	prog := h.prog(&d.objs.socklbPrograms)
	pin := ""
	if d.opts.PinPath != "" {
		pin = filepath.Join(d.opts.PinPath, linkPrefix+h.name)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			info, ierr := l.Info()
			if ierr == nil && info.Cgroup() != nil && info.Cgroup().CgroupId == cgid {
				if err := l.Update(prog); err != nil {
					l.Close()
					return nil, false, fmt.Errorf("update pinned link: %w", err)
				}
				return l, true, nil
			}
			// Pinned on another cgroup (the configured cgroup changed): replace it.
			l.Unpin()
			l.Close()
		}
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: path, Attach: h.typ, Program: prog})
	if err != nil {
		return nil, false, err
	}
	if pin != "" {
		if err := l.Pin(pin); err != nil {
			l.Close()
			return nil, false, fmt.Errorf("pin link: %w", err)
		}
	}
	return l, false, nil
}

// Detach removes every hook (and its pin): sockets in the cgroup connect as if no
// socket LB ran. Connections already made stay with their backend.
func (d *Dataplane) Detach() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.detachLocked()
}

func (d *Dataplane) detachLocked() error {
	var errs []error
	for name, l := range d.links {
		if d.opts.PinPath != "" {
			if err := l.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("unpin %s: %w", name, err))
			}
		}
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach %s: %w", name, err))
		}
	}
	d.links = map[string]link.Link{}
	d.cgroup = ""
	return errors.Join(errs...)
}

// Cgroup returns the cgroup the programs are attached to ("" when detached).
func (d *Dataplane) Cgroup() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cgroup
}

// Close releases this process's handles. Pinned links keep balancing; unpinned ones are
// detached. The shared maps belong to the XDP data plane and stay open.
func (d *Dataplane) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for name, l := range d.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close link %s: %w", name, err))
		}
	}
	d.links = map[string]link.Link{}
	errs = append(errs, d.objs.socklbPrograms.Close(),
		closeMaps(d.objs.SockRev, d.objs.SockVipStats, d.objs.SockEvents, d.objs.SockMonitorState))
	return errors.Join(errs...)
}

func closeMaps(ms ...*ebpf.Map) error {
	var errs []error
	for _, m := range ms {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	return errors.Join(errs...)
}

// Unpin removes the socket LB's own pinned maps (after Detach).
func (d *Dataplane) Unpin() error {
	if d.opts.PinPath == "" {
		return nil
	}
	var errs []error
	for _, m := range []*ebpf.Map{d.objs.SockRev, d.objs.SockVipStats} {
		if err := m.Unpin(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RemovePinned detaches the cgroup links pinned in dir and removes the socket LB's maps
// pinned there, without loading anything (l4lb cleanup). It returns what it removed;
// the XDP data plane's files are left to xdp.RemovePinned.
func RemovePinned(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	removed, errs := xdp.DetachPinnedLinks(dir, entries, linkPrefix)
	for _, name := range ownMaps {
		err := os.Remove(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", name, err))
			continue
		}
		removed = append(removed, name)
	}
	return removed, errors.Join(errs...)
}

// VIPCounters are one VIP's socket LB counters summed over CPUs.
type VIPCounters struct {
	Connects  uint64 `json:"connects"`
	Sendmsgs  uint64 `json:"sendmsgs"`
	NoBackend uint64 `json:"no_backend"`
}

// Counters returns the counters of the VIP with id (the XDP data plane's VIP id).
func (d *Dataplane) Counters(id uint32) (VIPCounters, error) {
	var per []socklbSockVipCounters
	if err := d.objs.SockVipStats.Lookup(id, &per); err != nil {
		return VIPCounters{}, fmt.Errorf("read socket counters of vip %d: %w", id, err)
	}
	var c VIPCounters
	for _, p := range per {
		c.Connects += p.Connects
		c.Sendmsgs += p.Sendmsgs
		c.NoBackend += p.NoBackend
	}
	return c, nil
}

// ResetCounters zeroes the counters of VIP id (a new VIP took the id).
func (d *Dataplane) ResetCounters(id uint32) error {
	zero := make([]socklbSockVipCounters, ebpf.MustPossibleCPU())
	if err := d.objs.SockVipStats.Put(id, zero); err != nil {
		return fmt.Errorf("reset socket counters of vip %d: %w", id, err)
	}
	return nil
}

// cgroupID is the id the kernel gives a cgroup v2 directory: its inode number.
func cgroupID(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("%s is not a cgroup v2 directory", path)
	}
	return st.Ino, nil
}

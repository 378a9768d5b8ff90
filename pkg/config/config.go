// Package config owns l4lb's configuration: its typed form, loading it from YAML with
// environment overrides, and validating it with errors that name file, line and field.
package config

import (
	"time"

	"github.com/l4lb/l4lb/internal/limits"
)

// Config is the whole of l4lb.yaml.
type Config struct {
	// Interfaces the XDP program attaches to.
	Interfaces []string `mapstructure:"interfaces"`
	// Dataplane: auto (the default: xdp if its program loads, else nftables, else
	// iptables), xdp, nftables, iptables, or socket (connect-time socket LB only, no XDP).
	Dataplane string `mapstructure:"dataplane"`
	// BPFFS is the directory on a bpffs where maps and links are pinned.
	BPFFS string `mapstructure:"bpffs"`
	// StateFile keeps admin overrides (drain, weight) across restarts.
	StateFile string `mapstructure:"state_file"`
	// DrainDelay: on shutdown, time between withdrawing the BGP routes and stopping.
	DrainDelay time.Duration `mapstructure:"drain_delay"`

	NextHop NextHop `mapstructure:"nexthop"`
	Encap   Encap   `mapstructure:"encap"`
	XDP     XDP     `mapstructure:"xdp"`
	IPVS    IPVS    `mapstructure:"ipvs"`
	Admin   Admin   `mapstructure:"admin"`
	BGP     BGP     `mapstructure:"bgp"`
	VIPs    []VIP   `mapstructure:"vips"`

	SocketLB SocketLB `mapstructure:"socket_lb"`
	// Prefilter is the XDP prefilter's deny list (prefilter.go).
	Prefilter Prefilter `mapstructure:"prefilter"`
	// Monitor is what the XDP program reports to `l4lb monitor` and the status page.
	Monitor Monitor `mapstructure:"monitor"`
}

// Monitor: the XDP program's events (drops with their reason; sampled flow decisions while
// a watcher asks for them).
type Monitor struct {
	// Drops: report every drop, rate-limited. Default true.
	Drops bool `mapstructure:"drops"`
	// Rate: events a second per CPU at most, drops and flow events together; above it
	// they are counted as lost. 0: no limit.
	Rate uint32 `mapstructure:"rate"`
	// Recent: how many of the last drops the status page keeps (restart-only).
	Recent int `mapstructure:"recent"`
}

// NextHop says where encapsulated packets go.
type NextHop struct {
	// MAC of the next hop. Empty: the MAC of the default route's gateway, resolved through
	// netlink and re-resolved when it changes.
	MAC string `mapstructure:"mac"`
	// Resolve how often to re-resolve the gateway's MAC (when MAC is empty).
	Resolve time.Duration `mapstructure:"resolve_interval"`
}

// Encap holds the outer source prefixes.
type Encap struct {
	Source4 string `mapstructure:"source4"`
	Source6 string `mapstructure:"source6"`
}

// XDP holds the XDP data plane's load-time sizes.
type XDP struct {
	RingSize      uint32        `mapstructure:"ring_size"`
	ConntrackSize uint32        `mapstructure:"conntrack_size"`
	UDPTimeout    time.Duration `mapstructure:"udp_timeout"`
	MTU           uint32        `mapstructure:"mtu"`
	// SlotMapping is how a flow hash picks a ring slot: modulo (the default) or scaled
	// (as nftables computes it; XDP and nftables nodes then pick the same backend for a
	// flow). Every node of a fleet must use the same.
	SlotMapping string `mapstructure:"slot_mapping"`
}

// Admin is the HTTP API.
type Admin struct {
	Listen    string `mapstructure:"listen"`
	TokenFile string `mapstructure:"token_file"`
}

// BGP is parsed and validated here; pkg/bgp uses it.
type BGP struct {
	Enabled               bool   `mapstructure:"enabled"`
	LocalASN              uint32 `mapstructure:"local_asn"`
	RouterID              string `mapstructure:"router_id"`
	ListenPort            int32  `mapstructure:"listen_port"`
	WithdrawWhenUnhealthy *bool  `mapstructure:"withdraw_when_unhealthy"`
	// ReadyWait: at start, how long readiness (systemd's READY=1) waits for every peer's
	// session; 0 does not wait.
	ReadyWait   time.Duration `mapstructure:"ready_wait"`
	Peers       []Peer        `mapstructure:"peers"`
	Communities []string      `mapstructure:"communities"`
}

// Peer is one BGP neighbour.
type Peer struct {
	Address         string        `mapstructure:"address"`
	ASN             uint32        `mapstructure:"asn"`
	Port            int           `mapstructure:"port"`
	Password        string        `mapstructure:"password"`
	HoldTime        time.Duration `mapstructure:"hold_time"`
	Keepalive       time.Duration `mapstructure:"keepalive"`
	GracefulRestart bool          `mapstructure:"graceful_restart"`
}

// VIP is one virtual service.
type VIP struct {
	Name             string    `mapstructure:"name"`
	Address          string    `mapstructure:"address"`
	Port             int       `mapstructure:"port"`
	Protocol         string    `mapstructure:"protocol"`
	HashNoSourcePort bool      `mapstructure:"hash_no_source_port"`
	Health           *Health   `mapstructure:"health"`
	Backends         []Backend `mapstructure:"backends"`
	Communities      []string  `mapstructure:"communities"`
	MED              uint32    `mapstructure:"med"`
	// RingSize is this VIP's Maglev ring size (a prime); 0: xdp.ring_size.
	RingSize uint32 `mapstructure:"ring_size"`
	// Allow: when set, only these source prefixes reach the VIP (XDP prefilter).
	Allow []string `mapstructure:"allow"`
	// Guard: the VIP's new-flow flood guard (prefilter.go).
	Guard *Guard `mapstructure:"guard"`
	// Forward is how the IPVS data plane reaches the backends: tunnel (IPIP, default)
	// or masq (NAT). Other data planes ignore it.
	Forward string `mapstructure:"forward"`
}

// EffectiveRingSize is the VIP's ring size: its own, or the global xdp.ring_size.
func (v VIP) EffectiveRingSize(c *Config) uint32 {
	if v.RingSize != 0 {
		return v.RingSize
	}
	return c.XDP.RingSize
}

// Backend is one real server of a VIP.
type Backend struct {
	Address string `mapstructure:"address"`
	Weight  *int64 `mapstructure:"weight"`
	// Health overrides fields of the VIP's health check for this backend.
	Health *Health `mapstructure:"health"`
}

// Health is a health check. In a backend, set fields override the VIP's.
type Health struct {
	Type               string        `mapstructure:"type"`
	Port               int           `mapstructure:"port"`
	Interval           time.Duration `mapstructure:"interval"`
	Timeout            time.Duration `mapstructure:"timeout"`
	Rise               int           `mapstructure:"rise"`
	Fall               int           `mapstructure:"fall"`
	Method             string        `mapstructure:"method"`
	Path               string        `mapstructure:"path"`
	ExpectStatus       int           `mapstructure:"expect_status"`
	BodyMatch          string        `mapstructure:"body_match"`
	Payload            string        `mapstructure:"payload"`
	Expect             string        `mapstructure:"expect"`
	InsecureSkipVerify bool          `mapstructure:"insecure_skip_verify"`
	// ServerName is an https check's SNI and the name its certificate must carry; CAFile
	// a PEM bundle to verify it against instead of the system's roots.
	ServerName string `mapstructure:"server_name"`
	CAFile     string `mapstructure:"ca_file"`
	// Via is the path the check takes: "direct" (default: to the backend's own address)
	// or "tunnel" (to the VIP, encapsulated to the backend as forwarded traffic is; with
	// the xdp data plane).
	Via string `mapstructure:"via"`
}

// Health check paths (Health.Via).
const (
	ViaDirect = "direct"
	ViaTunnel = "tunnel"
)

// Defaults for keys left out.
const (
	DefaultDataplane  = "auto"
	DefaultBPFFS      = "/sys/fs/bpf/l4lb"
	DefaultStateFile  = "/var/lib/l4lb/state.json"
	DefaultAdmin      = "127.0.0.1:9100"
	DefaultDrainDelay = 5 * time.Second
	DefaultResolve    = 10 * time.Second
	DefaultReadyWait  = 20 * time.Second
	// DefaultMonitorRate: events a second per CPU (monitor.rate).
	DefaultMonitorRate = 1000
	// DefaultMonitorRecent: drops the status page keeps (monitor.recent).
	DefaultMonitorRecent = 100
	// MaxMonitorRecent bounds monitor.recent.
	MaxMonitorRecent = 10000
	DefaultWeight    = 1
	MaxWeight        = 1 << 16
)

// defaults are set in viper so that environment variables can override every key.
func defaults() map[string]any {
	return map[string]any{
		"interfaces":               []string{},
		"dataplane":                DefaultDataplane,
		"bpffs":                    DefaultBPFFS,
		"state_file":               DefaultStateFile,
		"drain_delay":              DefaultDrainDelay,
		"nexthop.mac":              "",
		"nexthop.resolve_interval": DefaultResolve,
		"encap.source4":            "",
		"encap.source6":            "",
		"xdp.ring_size":            uint32(limits.DefaultRingSize),
		"xdp.conntrack_size":       uint32(limits.DefaultConntrackSize),
		"xdp.udp_timeout":          30 * time.Second,
		"xdp.mtu":                  uint32(1500),
		"xdp.slot_mapping":         "modulo",
		"ipvs.consider_in_auto":    false,
		"ipvs.vip_device":          DefaultIPVSDevice,
		"ipvs.state_file":          DefaultIPVSStateFile,
		"ipvs.resync_interval":     DefaultIPVSResync,
		"admin.listen":             DefaultAdmin,
		"admin.token_file":         "",
		"bgp.enabled":              false,
		"bgp.local_asn":            uint32(0),
		"bgp.router_id":            "",
		"bgp.listen_port":          int32(-1),
		"bgp.ready_wait":           DefaultReadyWait,
		"socket_lb.enabled":        false,
		"socket_lb.cgroup":         "",
		"socket_lb.sample_every":   uint32(1),
		"monitor.drops":            true,
		"monitor.rate":             uint32(DefaultMonitorRate),
		"monitor.recent":           DefaultMonitorRecent,
	}
}

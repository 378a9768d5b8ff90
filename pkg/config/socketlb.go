package config

import "path/filepath"

// SocketLB is connect-time load balancing for the node's own processes: cgroup hooks
// that connect a socket aimed at a VIP straight to one of its backends. It runs beside
// XDP (dataplane: xdp, enabled: true) or alone (dataplane: socket, where it is always on).
type SocketLB struct {
	Enabled bool `mapstructure:"enabled"`
	// Cgroup is the cgroup v2 directory whose processes (and their descendants') are
	// balanced. Empty: the cgroup v2 root, found in /proc/self/mountinfo.
	Cgroup string `mapstructure:"cgroup"`
	// SampleEvery: one translated connect in SampleEvery is reported with its process
	// (l4lb sockets); 0 turns sampling off.
	SampleEvery uint32 `mapstructure:"sample_every"`
}

// SocketLBOn says whether the node runs the socket LB.
func (c *Config) SocketLBOn() bool { return c.Dataplane == "socket" || c.SocketLB.Enabled }

func validateSocketLB(c *Config, bad func(string, string, ...any)) {
	s := c.SocketLB
	if c.Dataplane == "socket" && len(c.Interfaces) > 0 {
		bad("interfaces", "dataplane socket attaches to a cgroup, not to interfaces: leave interfaces empty")
	}
	if s.Enabled && c.Dataplane != "xdp" && c.Dataplane != "socket" && c.Dataplane != "auto" {
		// auto: the daemon refuses to start if auto falls back to a NAT data plane.
		bad("socket_lb.enabled", "needs the xdp maps: dataplane auto, xdp or socket, not %q", c.Dataplane)
	}
	if s.Cgroup != "" && (!filepath.IsAbs(s.Cgroup) || filepath.Clean(s.Cgroup) != s.Cgroup) {
		bad("socket_lb.cgroup", "%q: want a clean absolute path to a cgroup v2 directory", s.Cgroup)
	}
}

// Package lb owns the load-balancer model: VIPs, backends and their Maglev rings.
package lb

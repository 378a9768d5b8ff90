// Package health probes backends and reports their up/down transitions.
package health

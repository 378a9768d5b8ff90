// Package bpfobj holds what the loaders of l4lb's BPF objects (the forwarder and decap)
// share: load errors an operator can act on, counter reads and the maps' address layout.
package bpfobj

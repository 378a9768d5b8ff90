// Package vmtest boots a stock distribution kernel under QEMU and runs host binaries in it
// as root, returning their output and exit status.
package vmtest

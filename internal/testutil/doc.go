// Package testutil holds helpers for privileged tests: the privilege gate and network
// namespaces.
package testutil

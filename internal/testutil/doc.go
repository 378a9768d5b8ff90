// Package testutil holds helpers for privileged tests: the privilege gate, network
// namespaces and a recorder of requests made while a test changes the system.
package testutil

// Package packaging holds no code: its tests check the Debian package `make package`
// builds (nfpm.yaml, the maintainer scripts) and the systemd unit conf/l4lb.service.
package packaging

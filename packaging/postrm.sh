#!/bin/sh
# l4lb postrm: purge removes the saved drain and weight overrides and the admin token.
set -e
if [ "$1" = purge ]; then
	rm -rf /var/lib/l4lb /etc/l4lb/token
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0

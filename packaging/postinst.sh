#!/bin/sh
# l4lb postinst: tell systemd about the unit. A fresh install does not start the node
# (it would attach to the interfaces of an example config): edit /etc/l4lb/l4lb.yaml,
# then `systemctl enable --now l4lb`. An upgrade restarts a running node: the new
# daemon adopts the pinned maps, so established flows keep going.
set -e
# The admin API's bearer token (admin.token_file in the example config): made once,
# readable by root only; l4lb drain/weight/reload read it with --token-file.
if [ "$1" = configure ] && [ ! -e /etc/l4lb/token ]; then
	(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > /etc/l4lb/token)
fi
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	if [ -n "$2" ] && systemctl is-active --quiet l4lb.service; then
		systemctl restart l4lb.service
	fi
fi
exit 0

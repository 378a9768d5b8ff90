#!/bin/sh
# l4lb prerm: on removal, stop the node (BGP withdrawn first). The pinned program keeps
# forwarding until `l4lb cleanup` (run it before removing the package to stop
# forwarding). On upgrade the running node is left alone; postinst restarts it.
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl disable --now l4lb.service || true
fi
exit 0

#!/bin/sh
# Prints the version of the tree it runs in, usable both as l4lb's version and as a Debian
# package version (which must start with a digit and sorts ~ before anything):
#   on tag v1.2.3                   1.2.3
#   4 commits after v1.2.3          1.2.3+4.g0123abc
#   no tag yet                      0.0.0~git20250601103000.0123abc   (commit time, UTC:
#                                   two snapshots of one day sort in commit order)
#   uncommitted changes             ...+dirty
# Outside a git checkout it prints 0.0.0~unknown.
set -eu
cd "$(dirname "$0")/.."
if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo 0.0.0~unknown
	exit 0
fi
dirty=""
if ! git diff --quiet HEAD -- 2>/dev/null; then
	dirty="+dirty"
fi
if d=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
	# v1.2.3 or v1.2.3-4-g0123abc
	echo "$d$dirty" | sed -e 's/^v//' -e 's/-\([0-9][0-9]*\)-g\([0-9a-f]*\)/+\1.g\2/'
	exit 0
fi
date=$(TZ=UTC git log -1 --date=format-local:%Y%m%d%H%M%S --format=%cd)
echo "0.0.0~git$date.$(git rev-parse --short=7 HEAD)$dirty"

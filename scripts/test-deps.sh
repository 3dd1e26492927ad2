#!/usr/bin/env bash
# test-deps.sh installs what the tests need on a fresh Debian 12 machine and
# does nothing for what is already there. Run as root, or it uses sudo.
#
#   Debian packages: python3-slixmpp, python3-aioxmpp, go-sendxmpp,
#                    postgresql-15, iproute2, systemd (for systemd-analyze),
#                    prometheus (for promtool: cmd/xcollect checks /metrics),
#                    chromium (cmd/xcollect loads the dashboard in it),
#                    nodejs + npm (only when `node` is missing)
#   npm packages:    @xmpp/client, @xmpp/component in internal/interop/node
#                    (npm ci from the committed package-lock.json)
#
# It prints one line per thing it installs.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		echo "test-deps: not root and no sudo: run as root: $*" >&2
		exit 1
	fi
}

missing=()
# slixmpp: always the system Python; a pyenv python3 on PATH lacks it.
if ! /usr/bin/python3 -c 'import slixmpp' >/dev/null 2>&1; then
	missing+=(python3-slixmpp)
fi
if ! /usr/bin/python3 -c 'import aioxmpp' >/dev/null 2>&1; then
	missing+=(python3-aioxmpp)
fi
command -v go-sendxmpp >/dev/null 2>&1 || missing+=(go-sendxmpp)
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# systemd-analyze verifies deployments/xcollect.service (deployments tests).
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# promtool checks the /metrics output (cmd/xcollect TestMetricsMoveWithTraffic).
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# headless Chromium renders the dashboard (cmd/xcollect TestDashboardInChromium).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! command -v node >/dev/null 2>&1; then
	missing+=(nodejs npm)
elif ! command -v npm >/dev/null 2>&1; then
	missing+=(npm)
fi

if [ "${#missing[@]}" -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	as_root apt-get update -qq >/dev/null
	as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	for p in "${missing[@]}"; do
		echo "test-deps: installed $p (apt)"
	done
fi

# npm packages for internal/interop, from the committed lock file. Reinstall
# when node_modules is missing or older than package-lock.json.
nodedir="$root/internal/interop/node"
stamp="$nodedir/node_modules/.package-lock.json"
if [ ! -f "$stamp" ] || [ "$nodedir/package-lock.json" -nt "$stamp" ]; then
	(cd "$nodedir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	echo "test-deps: installed npm packages in internal/interop/node (@xmpp/client, @xmpp/component)"
fi

#!/usr/bin/env bash
# The Debian package, as a user gets it: builds it with CPack from a built tree
# (configured with -DCMAKE_INSTALL_PREFIX=/usr), installs it with dpkg -i, reads a man
# page, runs the installed broker and a pub/sub round trip with the installed tools,
# checks the systemd unit, then removes the package. Needs root (CI runs as root).
# Usage: scripts/test-package.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: test-package.sh BUILD_DIR}
if [ "$(id -u)" -ne 0 ]; then echo "package test: skipped (needs root for dpkg -i)"; exit 0; fi
if dpkg-query -W -f='${Status}' plh 2>/dev/null | grep -q 'install ok installed'; then
  echo "package test: a plh package is already installed; not touching it" >&2; exit 1
fi
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build/CMakeCache.txt")
[ "$prefix" = /usr ] || { echo "package test: $build is configured for $prefix, not /usr" >&2; exit 1; }
work=$(mktemp -d)
broker_pid=""
cleanup() {
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null || true
  dpkg -r plh >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
(cd "$build" && cpack -G DEB -B "$work/pkg" >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log" >&2; exit 1; }
deb=$(ls "$work"/pkg/plh_*.deb)
echo "package: $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"
dpkg-deb --info "$deb" | sed -n 's/^ *\(Depends:.*\)/package \1/p'
dpkg -i "$deb" >/dev/null
for t in plh-broker plh-pub plh-sub plh-shm plh-ctl; do
  [ -x "/usr/bin/$t" ] || { echo "package test: /usr/bin/$t missing" >&2; exit 1; }
done
MANPAGER=cat man plh-pub 2>/dev/null | grep -q "plh-pub" || { echo "package test: man plh-pub shows nothing" >&2; exit 1; }
grep -q '^ExecStart=/usr/bin/plh-broker ' /lib/systemd/system/plh-broker.service ||
  { echo "package test: no plh-broker.service with ExecStart=/usr/bin/plh-broker" >&2; exit 1; }
[ -f /usr/share/bash-completion/completions/plh-sub ] && [ -f /usr/share/zsh/vendor-completions/_plh-sub ] ||
  { echo "package test: shell completion for plh-sub not installed" >&2; exit 1; }
/usr/bin/python3 -c 'import plh' || { echo "package test: python3 cannot import plh" >&2; exit 1; }
pkg-config --exists plh 2>/dev/null || [ -f /usr/lib/x86_64-linux-gnu/pkgconfig/plh.pc ] || [ -f /usr/lib/pkgconfig/plh.pc ] ||
  { echo "package test: plh.pc not installed" >&2; exit 1; }
[ -f /etc/default/plh-broker ] || { echo "package test: /etc/default/plh-broker missing" >&2; exit 1; }
getent passwd plh >/dev/null || { echo "package test: user plh not created" >&2; exit 1; }
if [ -d /run/systemd/system ] && command -v systemd-analyze >/dev/null; then systemd-analyze verify /lib/systemd/system/plh-broker.service; fi
# The installed broker on an ephemeral port; its ready line names the endpoint.
mkfifo "$work/ready"
/usr/bin/plh-broker --endpoint tcp://127.0.0.1:0 >"$work/ready" 2>"$work/broker.err" &
broker_pid=$!
read -r -t 10 line <"$work/ready" || { echo "package test: no ready line from the broker" >&2; cat "$work/broker.err" >&2; exit 1; }
ep=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["endpoint"])' "$line")
export PLH_BROKER=$ep
/usr/bin/plh-sub pkg.test -n 3 -W 10s --wait >"$work/out" &
sub=$!
printf '1\n2\n3\n' | /usr/bin/plh-pub pkg.test -w 1 -W 10s
wait "$sub"
[ "$(cat "$work/out")" = "$(printf '1\n2\n3')" ] || { echo "package test: round trip got: $(cat "$work/out")" >&2; exit 1; }
/usr/bin/plh-ctl ping >/dev/null
kill "$broker_pid"; wait "$broker_pid" || true; broker_pid=""
dpkg -r plh >/dev/null
[ ! -e /usr/bin/plh-pub ] || { echo "package test: dpkg -r left /usr/bin/plh-pub" >&2; exit 1; }
echo "package test: installed, man page, broker, pub/sub round trip, removed: ok"

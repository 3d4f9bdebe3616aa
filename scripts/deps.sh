#!/usr/bin/env bash
# Installs the Debian 12 packages plh needs to build and test, when any is missing.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libzmq3-dev cppzmq-dev libcli11-dev nlohmann-json3-dev
      libspdlog-dev libicu-dev libsimdjson-dev catch2 libsodium-dev libxxhash-dev python3 python3-zmq procps
      iproute2 iptables util-linux clang libclang-rt-14-dev man-db adduser zsh)
pkgs+=(python3-numpy python3-pytest)  # the Python package plh (python/) and its pytest suite
[ "${1:-}" = "--bench" ] && pkgs+=(mosquitto mosquitto-clients hyperfine iceoryx libiceoryx-posh-dev libiceoryx-hoofs-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi

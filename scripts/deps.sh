#!/usr/bin/env bash
# Installs the Debian packages lrlab builds against, when any is missing. As root it runs apt-get;
# otherwise it prints the exact command to run and fails.
set -euo pipefail
# dataset-fashion-mnist holds the files `--data fashion-mnist` reads: without it their test skips
# and the demo falls back to a synthetic set.
pkgs=(cmake ninja-build g++ make libgtest-dev libcli11-dev libopenblas-dev nlohmann-json3-dev
      zlib1g-dev libopenmpi-dev openmpi-bin clang-14 libclang-rt-14-dev dataset-fashion-mnist "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "lrlab needs these Debian packages; run as root:" >&2
  echo "  apt-get update && $cmd" >&2
  exit 1
fi
echo "lrlab: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
$cmd

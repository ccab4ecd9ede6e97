#!/usr/bin/env bash
# Downloads the Debian packages lrlab builds against into .gpu-bundle/debs, for a machine that has a
# GPU, a compiler, CUDA and CMake but no package manager or network (benchmarks/gpu_check.sh unpacks
# them there). Runs on a Debian/Ubuntu amd64 machine with network access; needs no root.
# Usage: benchmarks/gpu_bundle.sh [--no-data]   (--no-data leaves out Fashion-MNIST, 30 MB)
set -euo pipefail
cd "$(dirname "$0")/.."

dest=.gpu-bundle/debs
limit_mib=60
pkgs=(libcli11-dev libgtest-dev nlohmann-json3-dev zlib1g-dev zlib1g
      libopenblas-dev libopenblas0 libopenblas-pthread-dev libopenblas0-pthread libgfortran5 libquadmath0
      dataset-fashion-mnist)
# Dependencies every machine with a C++ compiler already has, or that nothing here uses: googletest
# is GoogleTest's source tree (libgtest-dev ships built libraries), the other OpenBLAS flavours are
# alternatives to the pthread one bundled.
assumed=(libc6 libc6-dev libc-dev libgcc-s1 gcc-12-base libstdc++6 googletest
         libopenblas-openmp-dev libopenblas-serial-dev libopenblas0-openmp libopenblas0-serial)

if [[ ${1:-} == --no-data ]]; then
  pkgs=("${pkgs[@]/dataset-fashion-mnist}")
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--no-data]" >&2
  exit 2
fi
mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | grep -v '^$')

if [[ $(dpkg --print-architecture) != amd64 ]]; then
  echo "gpu_bundle: the GPU machine is amd64 and this one is $(dpkg --print-architecture); run this on amd64" >&2
  exit 1
fi

# Stale or missing package lists would make the dependency check below pass without checking.
if ! apt-cache show "${pkgs[@]}" >/dev/null 2>&1; then
  echo "gpu_bundle: refreshing the package lists" >&2
  apt-get update -qq || echo "gpu_bundle: could not refresh the package lists (needs root)" >&2
fi

# Every Depends/Pre-Depends of a bundled package must be bundled or assumed; an alternative group
# (A | B) needs one of its members.
is_known() {
  local d=$1 p
  for p in "${pkgs[@]}" "${assumed[@]}"; do [[ $d == "$p" || $d == "<$p>" ]] && return 0; done
  return 1
}
unmet=()
for p in "${pkgs[@]}"; do
  group=() group_ok=0
  while read -r kind dep; do
    group+=("$dep")
    is_known "$dep" && group_ok=1
    if [[ $kind != \|* ]]; then
      ((group_ok)) || unmet+=("$p needs ${group[*]}")
      group=() group_ok=0
    fi
  done < <(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
             --no-enhances "$p" | sed -n -E 's/^ +(\|?(Pre)?Depends): (.*)$/\1 \3/p')
done
if ((${#unmet[@]})); then
  printf 'gpu_bundle: dependency neither bundled nor assumed present: %s\n' "${unmet[@]}" >&2
  exit 1
fi

rm -rf "$dest"
mkdir -p "$dest"
# apt-get download writes into the current folder; an out-of-date package list is the usual failure.
# As root, apt would otherwise try (and warn about) its unprivileged user, which cannot write here.
apt_opts=()
[[ $(id -u) -eq 0 ]] && apt_opts=(-o APT::Sandbox::User=root)
if ! (cd "$dest" && apt-get "${apt_opts[@]}" download "${pkgs[@]}"); then
  echo "gpu_bundle: download failed; refreshing the package lists and retrying" >&2
  apt-get update -qq
  (cd "$dest" && apt-get "${apt_opts[@]}" download "${pkgs[@]}")
fi

for f in "$dest"/*.deb; do
  dpkg-deb -f "$f" Package Version | sed 's/^[^:]*: //' | paste -sd' '
done >"$dest/MANIFEST"
total=$(du -cb "$dest"/*.deb | tail -n1 | cut -f1)
echo "gpu_bundle: ${#pkgs[@]} packages, $((total / 1048576)) MiB in $dest"
if ((total > limit_mib * 1048576)); then
  echo "gpu_bundle: over ${limit_mib} MiB; the device's working tree limit is 64 MiB (try --no-data)" >&2
  exit 1
fi

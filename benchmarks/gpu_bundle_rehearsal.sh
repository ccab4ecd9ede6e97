#!/usr/bin/env bash
# Rehearses benchmarks/gpu_check.sh with the bundle on a machine where the bundled packages are
# installed, as if they were not: the GPU machine has CUDA, CMake, ninja and a python with torch, but
# none of lrlab's Debian packages and no Open MPI, and its one run must not be the first time the
# build finds its dependencies in the bundle alone.
#
# In a private mount namespace (root only; nothing changes outside it), /usr is overlaid and every
# file the bundled packages and Open MPI's development packages installed is deleted from the
# overlay, except zlib's runtime library, which CMake and python themselves load. Then gpu_check.sh
# runs against the device emulator (LRLAB_GPU_CHECK_EMULATE=1) with the bundle, into its own build
# folder. torch is left out (LRLAB_PYTHON pointing nowhere): Debian's torch loads the system's
# OpenBLAS, which is hidden, while the GPU machine's torch brings its own.
#
#   benchmarks/gpu_bundle_rehearsal.sh OUTDIR      (runs benchmarks/gpu_bundle.sh first if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "error: the rehearsal needs root (a mount namespace with an overlay of /usr)" >&2
  exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
bundle=.gpu-bundle/debs
compgen -G "$bundle/*.deb" >/dev/null || benchmarks/gpu_bundle.sh

# What the GPU machine lacks: the bundled packages (less zlib1g, see above) and Open MPI's
# development files, which would turn on the CLI's MPI support there.
hidden=()
for deb in "$bundle"/*.deb; do
  p=$(dpkg-deb -f "$deb" Package)
  [[ $p == zlib1g ]] || hidden+=("$p")
done
hidden+=(libopenmpi-dev openmpi-bin mpi-default-dev mpi-default-bin)
files=$(mktemp)
# The overlay's layers; the overlay itself ends with the namespace.
layer=$(mktemp -d)
trap 'rm -f "$files"; rm -rf "$layer"' EXIT
for p in "${hidden[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || continue
  # Debian 12 merges /lib into /usr/lib: a file listed under /lib is the one under /usr/lib.
  dpkg -L "$p" | sed -E 's#^/lib/#/usr/lib/#' | grep '^/usr/' >>"$files" || true
done
# The alternatives' links (libopenblas.so.0, mpicxx) end in the files above: gone with them.
echo "gpu_bundle_rehearsal: hiding $(wc -l <"$files") paths of ${#hidden[@]} packages"

export files out layer
unshare -m bash -c '
  set -euo pipefail
  mkdir -p "$layer/upper" "$layer/work"
  mount --make-rprivate /
  mount -t overlay overlay -o "lowerdir=/usr,upperdir=$layer/upper,workdir=$layer/work" /usr
  while IFS= read -r f; do
    [[ -d $f && ! -L $f ]] || rm -f "$f"
  done <"$files"
  for f in /usr/include/CLI/App.hpp /usr/include/nlohmann/json.hpp /usr/include/gtest/gtest.h \
           /usr/include/zlib.h /usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h /usr/bin/mpicxx \
           /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz; do
    [[ ! -e $f ]] || { echo "gpu_bundle_rehearsal: $f is still visible" >&2; exit 1; }
  done
  LRLAB_GPU_CHECK_EMULATE=1 LRLAB_GPU_CHECK_TIME_SCALE=${LRLAB_GPU_CHECK_TIME_SCALE:-3} \
    LRLAB_GPU_CHECK_BUILD=build-gpucheck-bundle LRLAB_PYTHON=/nonexistent \
    benchmarks/gpu_check.sh "$out"
'

#!/usr/bin/env bash
# Builds upcycle for a GPU machine that has the CUDA driver and toolkit but no Debian packages
# and no network (the H100 machines we are lent), and gathers what must travel with it into one
# folder and its OUT.tar.gz (about 32 MB, under the device tool's 64 MB carry): bin/upcycle with
# its CUDA plugin bin/libupcycle_cuda.so, bin/test_cuda, bin/test_e2e and lib/, the shared
# libraries the binaries load that such a machine lacks. The CUDA runtime is linked statically;
# cuBLAS (libcublas, libcublasLt: 570 MB) does not travel, the machine's own toolkit provides it
# (CUDA 13, as here).
#
#   scripts/gpu-bundle.sh [OUT]      default OUT: gpu-bundle (under the repository root)
#
# Environment: UPCYCLE_CUDA_ARCH (default 90: H100; 80 for A100) and the settings of
# scripts/common.sh (UPCYCLE_BUILD_DIR defaults to build-gpu here). On the GPU machine:
#   tar xzf OUT.tar.gz && export LD_LIBRARY_PATH=$PWD/OUT/lib:/usr/local/cuda/lib64:$LD_LIBRARY_PATH
#   OUT/bin/test_cuda                  every CUDA op, the model and its engine against the CPU
#   UPCYCLE_BINARY=$PWD/OUT/bin/upcycle OUT/bin/test_e2e -tc='--device*'
#                                      forward, eval, tune and convert with --device cuda
#   OUT/bin/upcycle bench --device cuda --json
# (scripts/gpu-check.sh OUT runs all of these and the transformers comparison in one command.)
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  upcycle_help "$0"
  exit 0
fi
out=$(upcycle_abspath "${1:-$UPCYCLE_ROOT/gpu-bundle}")
export UPCYCLE_BUILD_DIR=${UPCYCLE_BUILD_DIR:-build-gpu} UPCYCLE_CUDA=ON
export CMAKE_ARGS="${CMAKE_ARGS:-} -DCMAKE_CUDA_ARCHITECTURES=${UPCYCLE_CUDA_ARCH:-90}"
upcycle_build
build=$(upcycle_build_dir)

rm -rf "$out.tmp" && mkdir -p "$out.tmp/bin" "$out.tmp/lib"
binaries=("$build/upcycle/upcycle" "$build/upcycle/libupcycle_cuda.so" "$build/tests/test_cuda" "$build/tests/test_e2e")
cp "${binaries[@]}" "$out.tmp/bin/"
# Every library the binaries load, but the C library's own, the GPU driver's and cuBLAS.
ldd "${binaries[@]}" | awk '$3 ~ /^\// { print $3 }' | sort -u |
  grep -Ev '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libcuda|libcublas|libcublasLt)\.so' |
  while read -r lib; do cp -L "$lib" "$out.tmp/lib/"; done
rm -rf "$out" && mv "$out.tmp" "$out"
tar czf "$out.tar.gz.tmp" -C "$(dirname "$out")" "$(basename "$out")" && mv "$out.tar.gz.tmp" "$out.tar.gz"
upcycle_say "bundle in $out ($(du -sh "$out" | cut -f1)) and $out.tar.gz ($(du -sh "$out.tar.gz" | cut -f1))"

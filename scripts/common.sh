# Sourced (not run) by the scripts in this folder: the repository root, the build folder, and
# building. Settings, all optional, from the environment:
#   UPCYCLE_BUILD_DIR   build folder, relative to the repository root or absolute (default: build)
#   UPCYCLE_CUDA        AUTO (default: build the CUDA backend when nvcc is found), ON or OFF
#   CMAKE_BUILD_TYPE    default Release
#   CMAKE_ARGS          more arguments for the cmake configure step, split at spaces
#   UPCYCLE_JOBS        parallel build jobs (default: the number of cores)
#   UPCYCLE_SKIP_DEPS   1: do not run scripts/deps.sh first
# shellcheck shell=bash

UPCYCLE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

upcycle_say() { printf '\n== %s\n' "$*" >&2; }

# The comment block at the top of a script (its help text), without the '#'s.
upcycle_help() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$1"; }

# The build folder, absolute.
upcycle_build_dir() {
  local dir=${UPCYCLE_BUILD_DIR:-build}
  [[ $dir == /* ]] || dir=$UPCYCLE_ROOT/$dir
  printf '%s\n' "$dir"
}

# The `upcycle` binary in the build folder.
upcycle_binary() {
  printf '%s/upcycle/upcycle\n' "$(upcycle_build_dir)"
}

# A path made absolute against the current folder.
upcycle_abspath() {
  if [[ $1 == /* ]]; then printf '%s\n' "$1"; else printf '%s/%s\n' "$PWD" "$1"; fi
}

# For the benchmarks: sets `bin` to $UPCYCLE_BIN (against the current folder) when given, else
# builds and takes the build's binary; exits when it is not there.
upcycle_bench_binary() {
  if [[ -n ${UPCYCLE_BIN:-} ]]; then
    bin=$(upcycle_abspath "$UPCYCLE_BIN")
  else
    upcycle_build
    bin=$(upcycle_binary)
  fi
  [[ -x $bin ]] || { printf '%s: error: no upcycle binary at %s\n' "${0##*/}" "$bin" >&2; exit 1; }
}

# Installs what is missing, configures (again: cheap when nothing changed) and builds.
upcycle_build() {
  local dir extra=()
  dir=$(upcycle_build_dir)
  if [[ ${UPCYCLE_SKIP_DEPS:-0} != 1 ]]; then
    upcycle_say "dependencies (scripts/deps.sh)"
    bash "$UPCYCLE_ROOT/scripts/deps.sh"
  fi
  read -r -a extra <<<"${CMAKE_ARGS:-}"
  # The interop tests run under the same python3 that deps.sh installed their modules into.
  if command -v python3 >/dev/null 2>&1; then
    extra=("-DPython3_EXECUTABLE=$(command -v python3)" "${extra[@]}")
  fi
  upcycle_say "configure: $dir"
  cmake -S "$UPCYCLE_ROOT" -B "$dir" \
    -DCMAKE_BUILD_TYPE="${CMAKE_BUILD_TYPE:-Release}" \
    -DUPCYCLE_CUDA="${UPCYCLE_CUDA:-AUTO}" \
    "${extra[@]}"
  upcycle_say "build: cmake --build $dir -j${UPCYCLE_JOBS:-$(nproc)}"
  cmake --build "$dir" -j"${UPCYCLE_JOBS:-$(nproc)}"
}

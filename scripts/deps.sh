#!/usr/bin/env bash
# Installs what building and testing upcycle needs, and nothing that is already there.
#
#   scripts/deps.sh            system packages (apt-get) and the Python modules of the interop tests
#   scripts/deps.sh --fuzz     also clang and libFuzzer, for the fuzz targets (README: Fuzzing)
#   scripts/deps.sh --interop  also the real clients the widest interop tests load our files in:
#                              torch, transformers, peft and llama-cpp-python (pip builds
#                              llama.cpp from source: minutes)
#
# System packages come from apt-get, as root (through sudo when not root and sudo exists); the
# Python modules (numpy, safetensors, h5py, gguf, tokenizers, tensorboard) from pip. A second run checks and exits
# without touching the network. The CUDA toolkit is not installed here: machines with a GPU
# bring their own, and the build uses it when it finds nvcc (UPCYCLE_CUDA=AUTO).
set -euo pipefail

log() { printf 'deps: %s\n' "$*" >&2; }
warn() { printf 'deps: warning: %s\n' "$*" >&2; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

want_fuzz=0 want_interop=0
for arg in "$@"; do
  case "$arg" in
    --fuzz) want_fuzz=1 ;;
    --interop) want_interop=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (see --help)" ;;
  esac
done

packages=(cmake g++ make pkg-config libeigen3-dev libopenblas-dev libopenblas-openmp-dev libhdf5-dev
          libboost-program-options-dev libspdlog-dev doctest-dev nlohmann-json3-dev
          libsentencepiece-dev libdnnl-dev time
          libopenmpi-dev openmpi-bin  # multi-process training (mpirun -np N upcycle tune)
          ocl-icd-opencl-dev)  # the OpenCL library and headers that Debian's oneDNN CMake config requires
if ! command -v python3 >/dev/null 2>&1; then
  packages+=(python3 python3-pip)
elif ! python3 -m pip --version >/dev/null 2>&1; then
  packages+=(python3-pip)
fi
if [[ $want_fuzz == 1 ]]; then
  packages+=(clang libclang-rt-dev)  # Debian's default LLVM (14 on Debian 12), with libFuzzer
fi

# --- system packages ------------------------------------------------------------------------
installed() {
  [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  warn "no dpkg/apt-get here: make sure these (Debian names) are installed: ${packages[*]}"
else
  missing=()
  for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "system packages: all ${#packages[@]} present"
  else
    if [[ $(id -u) == 0 ]]; then
      as_root=()
    elif command -v sudo >/dev/null 2>&1; then
      as_root=(sudo)
    else
      die "missing packages and not root (no sudo either): install them with 'apt-get install ${missing[*]}'"
    fi
    log "installing: ${missing[*]}"
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}"
    for p in "${missing[@]}"; do
      installed "$p" || die "package '$p' is still not installed after apt-get install"
    done
    log "system packages: installed ${#missing[@]}"
  fi
fi

# --- Python modules for the interop tests ---------------------------------------------------
# Each interop test skips (exit 77) when its modules are missing, so a failure here is only a
# warning. The modules go to the python3 on PATH: scripts/common.sh points CMake at the same one.
if ! command -v python3 >/dev/null 2>&1; then
  warn "no python3: the interop tests will skip"
  exit 0
fi
# import name, or import name:pip name where they differ
modules=(numpy safetensors h5py gguf tokenizers tensorboard)
if [[ $want_interop == 1 ]]; then
  modules+=(torch transformers peft sentencepiece llama_cpp:llama-cpp-python)
fi
missing_py=()
for m in "${modules[@]}"; do
  python3 -c "import ${m%%:*}" >/dev/null 2>&1 || missing_py+=("${m#*:}")
done
if ((${#missing_py[@]} == 0)); then
  log "python modules: ${modules[*]} present ($(command -v python3))"
  exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  warn "python3 has no pip: cannot install ${missing_py[*]}; the interop tests that need them will skip"
  exit 0
fi

log "pip installing: ${missing_py[*]}"
pip_log=""
pip_install() {
  pip_log=$(python3 -m pip install --quiet --disable-pip-version-check --retries 1 --timeout 30 \
              "$@" "${missing_py[@]}" 2>&1)
}
# Plain first (a venv, pyenv or conda python); then into the user's site-packages; then past
# PEP 668's "externally managed" guard of a distribution's python.
in_venv=$(python3 -c 'import sys; print(int(sys.prefix != sys.base_prefix))')
if pip_install; then
  :
elif [[ $in_venv == 0 ]] && pip_install --user; then
  :
elif [[ $in_venv == 0 ]] && pip_install --user --break-system-packages; then
  :
else
  warn "pip could not install ${missing_py[*]} (no network?): the interop tests that need them will skip"
  warn "pip said: $(printf '%s\n' "$pip_log" | grep -v '^\s*$' | tail -n 1)"
  exit 0
fi
for m in "${modules[@]}"; do
  python3 -c "import ${m%%:*}" >/dev/null 2>&1 || warn "module '${m%%:*}' still does not import after pip install"
done
log "python modules: done"

#!/usr/bin/env bash
# The main job, as far as it goes today: builds upcycle (as scripts/test.sh does), fetches the
# real model (SmolLM2-135M-Instruct, Q4_1 GGUF) and runs the commands that exist on it:
# inspect the GGUF, export it to a Hugging Face folder, inspect that, export the folder to HDF5
# in bf16, inspect that. Outputs go to runs/demo/ in the repository. Runs from any directory.
#
# Environment (all optional): as scripts/test.sh (UPCYCLE_BUILD_DIR, UPCYCLE_CUDA, CMAKE_ARGS,
# UPCYCLE_SKIP_DEPS=1, UPCYCLE_CACHE).
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  upcycle_help "$0"
  exit 0
fi
cd "$UPCYCLE_ROOT"
start=$SECONDS

upcycle_build
bin=$(upcycle_binary)
[[ -x $bin ]] || { printf 'demo: error: no binary at %s after the build\n' "$bin" >&2; exit 1; }

upcycle_say "real model (scripts/fetch-smollm2.sh)"
model=$(bash scripts/fetch-smollm2.sh)

out=runs/demo
mkdir -p "$out"

# Prints the command (as `upcycle ...`), then runs it.
run() {
  upcycle_say "upcycle $*"
  "$bin" "$@"
}

run --version
run inspect "$model"
run export "$model" "$out/smollm2-hf" --overwrite
run inspect "$out/smollm2-hf" --json
run export "$out/smollm2-hf" "$out/smollm2.h5" --dtype bf16 --overwrite
run inspect "$out/smollm2.h5"

upcycle_say "done in $((SECONDS - start)) s: outputs in $UPCYCLE_ROOT/$out"
ls -l "$out" >&2

#!/usr/bin/env bash
# README command one: builds upcycle (as scripts/test.sh does, installing what is missing) and
# runs `upcycle demo`, the whole UpIT pipeline from nothing on synthetic instruction data: a small
# dense model tuned from scratch saving checkpoints, UpIT against sparse upcycling and the dense
# model at equal data and steps, evaluation, and runs/demo/report.md with metrics.csv and plots.
# About 10 minutes on two cores.
#
#   scripts/demo.sh [--model smollm2] [upcycle demo options...]
#
# --model smollm2 starts from SmolLM2-135M-Instruct instead (fetched by scripts/fetch-smollm2.sh,
# exported to a Hugging Face folder) into runs/demo-smollm2, with no base tuning and --tune-lr
# 1e-4; any other option goes to `upcycle demo` (see `upcycle demo --help`). Finished stages are
# skipped when run again. SmolLM2 tunes at about 180 tokens/s on two cores (its 8-expert MoEs
# slower), so the default steps take hours there: shorten them with --dense-steps and --steps.
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

args=()
smollm2=0
while (($#)); do
  if [[ $1 == --model && ${2:-} == smollm2 ]]; then
    upcycle_say "real model (scripts/fetch-smollm2.sh)"
    gguf=$(bash scripts/fetch-smollm2.sh)
    folder=runs/models/smollm2-hf
    [[ -d $folder ]] || { mkdir -p "$(dirname "$folder")" && "$bin" export "$gguf" "$folder"; }
    args+=(--model "$folder" --out runs/demo-smollm2 --base-steps 0)
    smollm2=1
    shift 2
  else
    args+=("$1")
    shift
  fi
done

# A pretrained model is fine-tuned gently, unless told otherwise.
if ((smollm2)) && [[ " ${args[*]} " != *" --tune-lr "* ]]; then args+=(--tune-lr 1e-4); fi

upcycle_say "upcycle demo ${args[*]}"
"$bin" demo "${args[@]}"
upcycle_say "done in $((SECONDS - start)) s"

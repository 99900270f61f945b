#!/usr/bin/env bash
# Fixed-seed outputs of every stage, as SHA-256: for checking that a change which should not
# change behaviour (a move, a refactoring) leaves every output byte-identical. Runs in DIR: `init`
# of the demo preset, `data synth` (train and test), `tune` of the dense model saving 3
# checkpoints, `convert` of them (upit with the router stage, sparse, btx, --fused), `tune` of the
# UpIT MoE and `eval` of it, then prints the SHA-256 of every model file, config, data file and
# the evaluation's JSON (metrics.jsonl holds wall times and is left out). Takes seconds.
#
#   scripts/output-hashes.sh [--dir DIR] > after.txt
#   UPCYCLE_BIN=/path/to/old/upcycle scripts/output-hashes.sh > before.txt; diff before.txt after.txt
#
#   --dir DIR   scratch folder (default: runs/output-hashes in the repository), replaced
#
# Builds upcycle first, with the settings of scripts/test.sh, unless UPCYCLE_BIN names a binary.
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
dir=$UPCYCLE_ROOT/runs/output-hashes
while (($#)); do
  case $1 in
    --dir) dir=$(upcycle_abspath "$2"); shift 2 ;;
    -h | --help) upcycle_help "$0"; exit 0 ;;
    *) printf '%s: unknown argument %s (see --help)\n' "${0##*/}" "$1" >&2; exit 1 ;;
  esac
done
upcycle_bench_binary
rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"
export OMP_NUM_THREADS=2
run() { "$bin" "$@" >/dev/null 2>>log.txt || { printf '%s: failed: upcycle %s (see %s/log.txt)\n' "${0##*/}" "$*" "$dir" >&2; exit 1; }; }

run init --preset demo --tokenizer bytes --seed 3 --out init -q
run data synth --n 200 --split train --seed 1 --out train.jsonl
run data synth --n 40 --split test --seed 2 --out test.jsonl
run tune --model init --data train.jsonl --out dense --steps 12 --save-count 3 --lr 3e-3 --batch-tokens 2048 --seq-len 256
checkpoints=(dense/step-* dense/final)
run convert --checkpoints "${checkpoints[@]}" --base init --experts 4 --top-k 2 --seed-data test.jsonl --router-epochs 1 \
  --seq-len 256 --out upit --seed 5
run convert --checkpoints "${checkpoints[@]}" --method sparse --from 2 --experts 4 --top-k 2 --out sparse --seed 5
run convert --checkpoints "${checkpoints[@]}" --method btx --top-k 2 --out btx --seed 5
run convert --checkpoints "${checkpoints[@]}" --base init --experts 6 --top-k 2 --router random --fused --out fused --seed 5
run tune --model upit --data train.jsonl --out moe --steps 4 --lr 1e-3 --batch-tokens 2048 --seq-len 256
"$bin" eval --model moe/final --data test.jsonl --seq-len 256 --json >eval.json 2>>log.txt
find . -type f \( -name '*.safetensors' -o -name 'config.json' -o -name '*.jsonl' -o -name 'eval.json' \) \
  ! -name metrics.jsonl | sort | xargs sha256sum

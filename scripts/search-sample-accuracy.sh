#!/usr/bin/env bash
# Measures what `convert --search-sample` costs in accuracy: the expert search run exactly
# (--search-sample 0) and on a sample, over several seeds, on real intermediate checkpoints of an
# instruction-tuning run. SmolLM2-135M-Instruct (scripts/fetch-smollm2.sh, exported to a Hugging
# Face folder) is tuned on synthetic instruction data for --steps steps with 4 checkpoints
# (`tune --save-count 4`), which `convert --experts 8 --router random` grows to 8 experts, once
# per seed and sample size, with the checkpoints' mean as the base and with the model before
# tuning (--base). Prints, per sample size, how many searches kept the same pool as the exact one
# and the largest difference of any distance (before and after the search) from the exact one.
#
#   scripts/search-sample-accuracy.sh [--dir DIR] [--samples "N ..."] [--seeds N] [--steps N]
#
#   --dir DIR        scratch folder (default: runs/search-sample in the repository); the tuning
#                    run is kept there and reused
#   --samples "N .." sample sizes to compare with the exact search (default "262144 65536")
#   --seeds N        seeds 1..N per base (default 8)
#   --steps N        tuning steps (default 24: about 2.5 minutes on 2 cores)
#
# A SmolLM2 tensor has 884,736 elements (216 blocks of 4096). Builds upcycle first, with the
# settings of scripts/test.sh, unless UPCYCLE_BIN names a binary.
set -euo pipefail

die() { printf 'search-sample-accuracy: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'search-sample-accuracy: %s\n' "$*" >&2; }

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

dir="$UPCYCLE_ROOT/runs/search-sample"
samples=(262144 65536)
seeds=8
steps=24
while (($#)); do
  case "$1" in
    --dir) [[ $# -ge 2 ]] || die "--dir needs a value"; dir=$(upcycle_abspath "$2"); shift 2 ;;
    --samples) [[ $# -ge 2 && $2 =~ ^[0-9\ ]+$ ]] || die "--samples needs numbers"; read -ra samples <<<"$2"; shift 2 ;;
    --seeds) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--seeds needs a number >= 1"; seeds=$2; shift 2 ;;
    --steps) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--steps needs a number >= 1"; steps=$2; shift 2 ;;
    -h|--help) upcycle_help "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
cd "$UPCYCLE_ROOT"
upcycle_bench_binary
mkdir -p "$dir"

model="$dir/smollm2-hf"
if [[ ! -d $model ]]; then
  gguf=$(scripts/fetch-smollm2.sh)
  "$bin" export "$gguf" "$model.tmp" && mv "$model.tmp" "$model"
fi
run="$dir/tune-$steps"
if [[ ! -d $run/final ]]; then
  log "tuning SmolLM2-135M for $steps steps (4 checkpoints)"
  "$bin" data synth --n 300 --out "$dir/train.jsonl" --overwrite
  rm -rf "$run"
  "$bin" tune --model "$model" --data "$dir/train.jsonl" --out "$run" --steps "$steps" --batch-tokens 1024 \
    --seq-len 512 --lr 1e-4 --warmup 2 --save-count 4 --save-dtype bf16
fi
mapfile -t ckpts < <(find "$run" -maxdepth 1 -name 'step-*' | sort)
ckpts+=("$run/final")
((${#ckpts[@]} == 4)) || die "$run: expected 3 step-* checkpoints and final/"

reports="$dir/reports"
rm -rf "$reports" && mkdir -p "$reports"
for base in mean tuned-from; do
  extra=()
  [[ $base == tuned-from ]] && extra=(--base "$model")
  for ((seed = 1; seed <= seeds; seed++)); do
    for s in 0 "${samples[@]}"; do
      log "base $base, seed $seed, --search-sample $s"
      "$bin" convert --checkpoints "${ckpts[@]}" "${extra[@]}" --experts 8 --top-k 2 --router random \
        --seed "$seed" --search-sample "$s" --out "$dir/moe" --overwrite 2>/dev/null
      cp "$dir/moe/upcycle_convert.json" "$reports/$base-$seed-$s.json"
    done
  done
done
rm -rf "$dir/moe"

python3 - "$reports" "$seeds" "${samples[@]}" <<'EOF'
import json, sys
reports, seeds, samples = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(base, seed, s):
    with open(f"{reports}/{base}-{seed}-{s}.json") as f:
        return json.load(f)
for s in samples:
    same = total = 0
    worst = 0.0
    for base in ("mean", "tuned-from"):
        for seed in range(1, seeds + 1):
            exact, sampled = load(base, seed, 0), load(base, seed, s)
            total += 1
            same += exact["pool"] == sampled["pool"]
            for key in ("distances_before", "distances_after"):
                for row_e, row_s in zip(exact[key], sampled[key]):
                    worst = max(worst, max(abs(a - b) for a, b in zip(row_e, row_s)))
    print(f"--search-sample {s}: the exact search's pool in {same} of {total} searches; "
          f"distances within {worst:.2e} of exact")
EOF

#!/usr/bin/env bash
# What each step of UpIT's conversion costs before any MoE tuning: from a finished `upcycle demo`
# folder, converts every repeat's dense run (rR/dense-run) again as the demo does (8 experts
# top-2, deltas from base/final, seed data from data/train.jsonl, seed R) and as each ablation
# does, and measures the converted model's test loss (data/test.jsonl) against the dense run's
# final model. Prints a row per variant: the mean difference over repeats with its 95% t interval
# (report/statistics' method, computed here with Python's statistics module and the t quantile),
# and the experts' mean distance in function (the router stage's seed_loss_distances: the mean
# gap in seed loss per sample, off the diagonal; "-" where no router stage ran).
#
#   scripts/start-loss-ablations.sh --dir runs/demo [--experts 8]
#
# Variants: upit (the demo's), router random (no pre-optimisation), router hidden, seed
# assignment random, router lr 1e-4, shared weights from the final checkpoint, the search's
# fitness in function (--fitness function), sparse (copies of the final FFN: exactly the dense
# model, a check). Builds upcycle first, with the settings of
# scripts/test.sh, unless UPCYCLE_BIN names a binary. About 10 s per variant and repeat on 2 cores.
set -euo pipefail

die() { printf 'start-loss-ablations: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'start-loss-ablations: %s\n' "$*" >&2; }

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

dir=""
experts=8
while (($#)); do
  case "$1" in
    --dir) [[ $# -ge 2 ]] || die "--dir needs a value"; dir=$(upcycle_abspath "$2"); shift 2 ;;
    --experts) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--experts needs a number >= 1"; experts=$2; shift 2 ;;
    -h|--help) upcycle_help "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ -n $dir ]] || die "--dir DIR (a finished upcycle demo folder) is required"
[[ -d $dir/data && -f $dir/data/test.jsonl ]] || die "$dir: no data/test.jsonl: not a demo folder"
base="$dir/base/final"
[[ -d $base ]] || base="$dir/init"
cd "$UPCYCLE_ROOT"
upcycle_bench_binary

variants=(upit "router-random:--router random" "router-hidden:--router hidden" "seed-assign-random:--seed-assign random"
          "router-lr-1e-4:--router-lr 1e-4" "shared-final:--shared-from LAST" "fitness-function:--fitness function" "sparse:")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
results="$scratch/results.tsv"
: >"$results"
for repeat_dir in "$dir"/r*/; do
  r=${repeat_dir%/}; r=${r##*/r}
  run="$repeat_dir/dense-run"
  [[ -d $run/final ]] || die "$run: no final/ (an unfinished demo?)"
  mapfile -t ckpts < <(find "$run" -maxdepth 1 -name 'step-*' | sort)
  ckpts+=("$run/final")
  eval_loss() { "$bin" eval --model "$1" --data "$dir/data/test.jsonl" --seq-len 256 --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["loss"])'; }
  dense=$(eval_loss "$run/final")
  for v in "${variants[@]}"; do
    name=${v%%:*}
    read -ra extra <<<"${v#*:}"
    [[ $v == *:* ]] || extra=()
    extra=("${extra[@]/LAST/$((${#ckpts[@]} - 1))}")
    if [[ $name == sparse ]]; then
      args=(--method sparse --checkpoints "$run/final")
    else
      args=(--checkpoints "${ckpts[@]}" --base "$base" --data "$dir/data/train.jsonl" --seed-min 100 "${extra[@]}")
    fi
    log "repeat $r: $name"
    "$bin" convert "${args[@]}" --experts "$experts" --top-k 2 --seed "$r" --out "$scratch/moe" --overwrite 2>/dev/null
    spread=$(python3 -c 'import json,sys
d = json.load(open(sys.argv[1])).get("seed_loss_distances")
n = len(d or [])
print(sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1)) if n > 1 else "-")' "$scratch/moe/upcycle_convert.json")
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$r" "$(eval_loss "$scratch/moe")" "$dense" "$spread" >>"$results"
  done
done

python3 - "$results" <<'PY'
import statistics, sys
from collections import defaultdict
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
loss, dense, spread = defaultdict(dict), {}, defaultdict(list)
for line in open(sys.argv[1]):
    name, r, value, d, s = line.rstrip("\n").split("\t")
    loss[name][r], dense[r] = float(value), float(d)
    if s != "-":
        spread[name].append(float(s))

def interval(diffs):
    """Mean [95% t interval] of paired differences."""
    m = statistics.mean(diffs)
    if len(diffs) < 2:
        return f"{m:+.4f}"
    h = T975[len(diffs) - 1] * statistics.stdev(diffs) / len(diffs) ** 0.5
    return f"{m:+.4f} [{m - h:+.4f}, {m + h:+.4f}]"

print(f"{'variant':<20} {'n':>2} {'loss before tuning':>18}  {'minus dense final':<32} {'minus upit':<32} seed-loss gap")
for name, by_repeat in loss.items():
    repeats = sorted(by_repeat)
    gap = f"{statistics.mean(spread[name]):.4f}" if spread[name] else "-"
    print(f"{name:<20} {len(repeats):>2} {statistics.mean(by_repeat.values()):>18.4f}  "
          f"{interval([by_repeat[r] - dense[r] for r in repeats]):<32} "
          f"{interval([by_repeat[r] - loss['upit'][r] for r in repeats]):<32} {gap}")
PY

#!/usr/bin/env bash
# Runs every check and measurement the GPU issue asks for in one command on a GPU machine, from a
# bundle that scripts/gpu-bundle.sh made here (such a machine has no packages and no network).
#
#   scripts/gpu-check.sh [BUNDLE] [OUT]   defaults: gpu-bundle (unpacked from gpu-bundle.tar.gz
#                                         when only that is there), and $OUT or gpu-check
#
# Each step is logged to OUT/STEP.log, and a failed step does not stop the later ones:
#   test_cuda   every CUDA op, the model and its engine against the CPU
#   device      test_e2e's --device cases: forward, eval, tune and convert with --device cuda
#   bench       upcycle bench --device cuda --json, into OUT/bench.json
#   torch       scripts/bench-torch-train.py --json (transformers on the same shapes, batch and
#               sequence length), into OUT/torch.json
# Then a line per step: its exit status (77: skipped) and seconds. Exits 1 when a step failed.
# Environment: BENCH_ARGS, passed to both benchmarks (say "--shape moe-1b --steps 5").
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
  exit 0
fi
bundle=${1:-gpu-bundle}
out=${2:-${OUT:-gpu-check}}
if [[ ! -d $bundle && -f $bundle.tar.gz ]]; then
  tar xzf "$bundle.tar.gz" -C "$(dirname "$bundle")" || exit 1
fi
[[ -x $bundle/bin/upcycle ]] || { echo "gpu-check: no bundle at $bundle (scripts/gpu-bundle.sh makes one)" >&2; exit 1; }
bundle=$(cd "$bundle" && pwd)
mkdir -p "$out"
export LD_LIBRARY_PATH="$bundle/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
read -r -a bench_args <<< "${BENCH_ARGS:-}"

summary=() failed=0
# step NAME OUTFILE COMMAND...: runs it with stdout to OUTFILE (or the log) and stderr to the log.
step() {
  local name=$1 stdout=$2
  shift 2
  local start=$SECONDS
  "$@" > "${stdout:-$out/$name.log}" 2>> "$out/$name.log"
  local code=$?
  summary+=("$(printf '%-10s exit %3d  %5d s' "$name" "$code" $((SECONDS - start)))")
  [[ $code == 0 || $code == 77 ]] || failed=1
}

step test_cuda "" "$bundle/bin/test_cuda"
step device "" env UPCYCLE_BINARY="$bundle/bin/upcycle" "$bundle/bin/test_e2e" -tc='--device*' -s
step bench "$out/bench.json" "$bundle/bin/upcycle" bench --device cuda --json "${bench_args[@]}"
step torch "$out/torch.json" python3 "$here/bench-torch-train.py" --json "${bench_args[@]}"

printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
exit "$failed"

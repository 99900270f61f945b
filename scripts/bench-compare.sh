#!/usr/bin/env bash
# Our CPU trainer against PyTorch on the same machine, in one run: `upcycle bench --json`, then
# scripts/bench-torch.py with the same shapes, batch and threads, then the ratios.
#   scripts/bench-compare.sh [--python PYTHON] [--out FILE.json]
# PYTHON (default python3) must have torch and transformers (pip); upcycle is built as
# scripts/test.sh builds it (UPCYCLE_BUILD_DIR, CMAKE_ARGS, ...).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
here=$UPCYCLE_ROOT/scripts

python=python3
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python) python="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) upcycle_help "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "bench-compare.sh: unknown option $1" >&2; exit 1 ;;
  esac
done

upcycle_build
threads="$(nproc)"
ours="$("$(upcycle_binary)" bench --json)"
theirs="$(OMP_NUM_THREADS="$threads" "$python" "$here/bench-torch.py" --json --threads "$threads")"
"$python" - "$ours" "$theirs" "$out" <<'PY'
import json, sys
ours, theirs, out = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
pairs = [("train_tokens_per_s", "dense_train_tokens_per_s"), ("forward_tokens_per_s", "dense_forward_tokens_per_s"),
         ("moe_train_tokens_per_s", "moe_train_tokens_per_s"), ("moe_forward_tokens_per_s", "moe_forward_tokens_per_s")]
ratios = {a: ours[a] / theirs[b] for a, b in pairs}
for a, b in pairs:
    print(f"{a:28s} upcycle {ours[a]:8.1f}   torch {theirs[b]:8.1f}   ratio {ratios[a]:.2f}")
print(f"sgemm ceiling {ours['sgemm_gflops']:.1f} GFLOP/s; training at {ours['train_fraction_of_sgemm']:.2f} (dense), "
      f"{ours['moe_train_fraction_of_sgemm']:.2f} (moe) of it")
if out:
    with open(out, "w") as f:
        json.dump({"upcycle": ours, "torch": theirs, "ratios": ratios}, f, indent=2)
PY

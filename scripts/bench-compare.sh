#!/usr/bin/env bash
# Our CPU trainer against PyTorch on the same machine, in one run: `upcycle bench --json`, then
# scripts/bench-torch.py with the same shapes, batch and threads, then the ratios, one per
# (precision, model, path): f32 against f32, bf16 against torch.autocast's bf16; LoRA training
# (`upcycle bench --lora`) against PEFT's where PYTHON has peft, and the LoRA-MoE's (`--lora-experts
# 8`) against bench-torch.py's MixLoRA over PEFT.
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
lora="$("$(upcycle_binary)" bench --lora --json)"
lora_moe="$("$(upcycle_binary)" bench --lora --lora-experts 8 --json)"
theirs="$(OMP_NUM_THREADS="$threads" "$python" "$here/bench-torch.py" --json --threads "$threads")"
"$python" - "$ours" "$lora" "$theirs" "$out" "$lora_moe" <<'PY'
import json, sys
ours, theirs, out = json.loads(sys.argv[1]), json.loads(sys.argv[3]), sys.argv[4]
for extra in (sys.argv[2], sys.argv[5]):
    ours.update({k: v for k, v in json.loads(extra).items() if k.startswith(("lora_", "bf16_lora_"))})
# (ratio key, ours, torch's): f32 against f32, bf16 against bf16 autocast.
pairs = [("f32_dense_train", "train_tokens_per_s", "dense_train_tokens_per_s"),
         ("f32_dense_forward", "forward_tokens_per_s", "dense_forward_tokens_per_s"),
         ("f32_moe_train", "moe_train_tokens_per_s", "moe_train_tokens_per_s"),
         ("f32_moe_forward", "moe_forward_tokens_per_s", "moe_forward_tokens_per_s"),
         ("bf16_dense_train", "bf16_train_tokens_per_s", "dense_bf16_train_tokens_per_s"),
         ("bf16_dense_forward", "bf16_forward_tokens_per_s", "dense_bf16_forward_tokens_per_s"),
         ("bf16_moe_train", "moe_bf16_train_tokens_per_s", "moe_bf16_train_tokens_per_s"),
         ("bf16_moe_forward", "moe_bf16_forward_tokens_per_s", "moe_bf16_forward_tokens_per_s"),
         ("f32_lora_train", "lora_train_tokens_per_s", "lora_train_tokens_per_s"),
         ("bf16_lora_train", "bf16_lora_train_tokens_per_s", "lora_bf16_train_tokens_per_s"),
         ("f32_lora_moe_train", "lora_moe_train_tokens_per_s", "lora_moe_train_tokens_per_s"),
         ("bf16_lora_moe_train", "bf16_lora_moe_train_tokens_per_s", "lora_moe_bf16_train_tokens_per_s")]
ratios = {k: ours[a] / theirs[b] for k, a, b in pairs if a in ours and b in theirs}
print(f"{'tokens/s':20s} {'upcycle':>9s} {'torch':>9s}  ratio")
for k, a, b in pairs:
    if k in ratios:
        print(f"{k:20s} {ours[a]:9.1f} {theirs[b]:9.1f}  {ratios[k]:.2f}")
print(f"sgemm ceiling {ours['sgemm_gflops']:.1f} GFLOP/s; training at {ours['train_fraction_of_sgemm']:.2f} (dense), "
      f"{ours['moe_train_fraction_of_sgemm']:.2f} (moe) of it")
if out:
    with open(out, "w") as f:
        json.dump({"upcycle": ours, "torch": theirs, "ratios": ratios}, f, indent=2)
PY

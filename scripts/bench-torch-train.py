#!/usr/bin/env python3
"""GPU training throughput of Hugging Face transformers, to set beside `upcycle bench --device cuda`.

    python3 scripts/bench-torch-train.py [--shape NAME ...] [--batch 4 --seq-len 2048 --steps 10]
                                         [--warmup 3] [--json] [--attn-implementation sdpa]

Run it on the GPU machine (PyTorch 2.11, transformers 5.x; no network is needed: the models are
built from configs with random weights) with the same --shape, --batch and --seq-len as
`upcycle bench --device cuda --shape NAME`, in the same session, and compare tokens/s and
mfu_vs_ceiling. Shapes: smollm2 (LlamaForCausalLM, SmolLM2-135M's shape), smollm2-moe (Mixtral of
that shape, 8 experts top-2), llama-1b (Llama, 20 layers, hidden 2048) and moe-1b (Mixtral of that
shape, 8 experts of width 2816, top-2); the default is all four.

A step is mixed precision as ours: fp32 parameters, the forward under
torch.autocast(bfloat16), loss = model(input_ids, labels=input_ids).loss (transformers adds the
router's load-balancing loss, coefficient 0.01, for the MoEs), backward, clip_grad_norm_(1.0),
fused AdamW(lr=1e-5), zero_grad(set_to_none=True). After --warmup untimed steps, --steps steps
are timed by wall clock between torch.cuda.synchronize() calls. Per shape it reports
tokens_per_s, step_s, peak_memory_gb, params_total, params_active, model_tflops (FLOPs counted
as trainer/flops.hpp counts them) and mfu_vs_ceiling, the ratio to a bf16 GEMM ceiling measured
first in the same run (best of a few n^3 torch.matmul, n = --gemm-size). A shape that runs out of
memory is reported as {"error": "out of memory"} and the next one runs.

Note: transformers' default experts implementation for Mixtral (grouped_mm) is not covered by
autocast and casts its input to the weights' dtype, so with fp32 parameters the experts' matmuls
run in fp32; --experts-implementation eager runs them as per-expert F.linear, in bf16.

Progress goes to stderr; with --json only one JSON object goes to stdout. Exits 77 when torch or
transformers cannot be imported or, with --device cuda (the default), when no GPU is visible.
--device cpu with --layers 1 and a tiny --seq-len is a smoke test of the script itself.
"""
import argparse
import gc
import json
import sys
import time

COMMON = dict(
    rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    tie_word_embeddings=False, hidden_act="silu", attention_bias=False, use_cache=False,
)
MOE = dict(num_experts_per_tok=2, router_aux_loss_coef=0.01, output_router_logits=True)
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, head_dim=64)
LLAMA_1B = dict(vocab_size=32000, hidden_size=2048, num_hidden_layers=20,
                num_attention_heads=16, num_key_value_heads=8, head_dim=128)
# name: (transformers class, config fields)
SHAPES = {
    "smollm2": ("LlamaForCausalLM", SMOLLM2),
    "smollm2-moe": ("MixtralForCausalLM", {**SMOLLM2, **MOE, "num_local_experts": 8}),
    "llama-1b": ("LlamaForCausalLM", {**LLAMA_1B, "intermediate_size": 5632}),
    "moe-1b": ("MixtralForCausalLM", {**LLAMA_1B, **MOE, "intermediate_size": 2816,
                                      "num_local_experts": 8}),
}
CONFIGS = {"LlamaForCausalLM": "LlamaConfig", "MixtralForCausalLM": "MixtralConfig"}


def shape_list(text):
    names = [n for n in text.split(",") if n]
    for n in names:
        if n not in SHAPES:
            raise argparse.ArgumentTypeError(f"unknown shape {n!r} (one of {', '.join(SHAPES)})")
    return names


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=shape_list, action="append",
                   help=f"repeatable or comma list: {', '.join(SHAPES)} (default: all)")
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--layers", type=int, help="override num_hidden_layers (smoke tests)")
    p.add_argument("--attn-implementation", choices=("sdpa", "eager", "flash_attention_2"),
                   help="default: transformers' default")
    p.add_argument("--experts-implementation", choices=("eager", "grouped_mm", "batched_mm"),
                   help="for the MoEs; default: transformers' default")
    p.add_argument("--gemm-size", type=int,
                   help="n of the ceiling's n^3 bf16 matmul (default 8192; 512 on the CPU)")
    a = p.parse_args()
    a.shape = list(dict.fromkeys(n for names in a.shape or [list(SHAPES)] for n in names))
    if a.gemm_size is None:
        a.gemm_size = 8192 if a.device == "cuda" else 512
    if min(a.batch, a.seq_len - 1, a.steps, a.warmup + 1, a.gemm_size, a.layers or 1) < 1:
        p.error("--batch >= 1, --seq-len >= 2, --steps >= 1, --warmup >= 0, --gemm-size >= 1, --layers >= 1")
    return a


def log(msg):
    print(f"bench-torch-train: {msg}", file=sys.stderr, flush=True)


def import_libs(device):
    try:
        import torch
        import transformers
    except ImportError as e:
        log(f"needs torch and transformers ({e})")
        sys.exit(77)
    if device == "cuda" and not torch.cuda.is_available():
        log("no CUDA device visible to torch (torch.cuda.is_available() is false)")
        sys.exit(77)
    return torch, transformers


def synchronize(torch, device):
    if device == "cuda":
        torch.cuda.synchronize()


def gemm_ceiling_tflops(torch, device, n, rounds=5, per_round=10):
    """Best of `rounds` timings of `per_round` n×n×n bf16 matmuls, in TFLOP/s."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    c = torch.matmul(a, b)
    best = float("inf")
    for _ in range(rounds):
        synchronize(torch, device)
        start = time.perf_counter()
        for _ in range(per_round):
            torch.matmul(a, b, out=c)
        synchronize(torch, device)
        best = min(best, (time.perf_counter() - start) / per_round)
    return 2 * n**3 / best / 1e12


def build_model(torch, transformers, name, args):
    cls_name, fields = SHAPES[name]
    fields = dict(COMMON, **fields, max_position_embeddings=args.seq_len)
    if args.layers:
        fields["num_hidden_layers"] = args.layers
    if args.attn_implementation:
        fields["attn_implementation"] = args.attn_implementation
    if args.experts_implementation and "num_local_experts" in fields:
        fields["experts_implementation"] = args.experts_implementation
    config = getattr(transformers, CONFIGS[cls_name])(**fields)
    torch.manual_seed(0)
    with torch.device(args.device):
        return getattr(transformers, cls_name)(config).train()


def count_params(model):
    """All parameters, and those one token uses: an MoE's unchosen (E - k) / E of the experts drop out."""
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    c = model.config
    unused = experts * (c.num_local_experts - c.num_experts_per_tok) // c.num_local_experts if experts else 0
    return total, total - unused


def train_flops_per_token(c, seq_len):
    """Mirrors trainer/flops.hpp and trainer/flops.cpp exactly: 6 × the active matmul parameters
    (q, k, v, o, the router, the dense FFN or k experts' FFNs per layer, then the LM head; no
    embedding lookup, no norms) + 12 · L · nH · D · (seq_len + 1) / 2 for causal attention."""
    h, q_dim, kv_dim = c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    attention = h * q_dim + 2 * h * kv_dim + q_dim * h
    experts = getattr(c, "num_local_experts", 0)
    if experts:
        ffn = c.num_experts_per_tok * 3 * h * c.intermediate_size + experts * h
    else:
        ffn = 3 * h * c.intermediate_size
    matmul_params = c.num_hidden_layers * (attention + ffn) + c.vocab_size * h
    attention_flops = 12.0 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * (seq_len + 1) / 2.0
    return 6.0 * matmul_params + attention_flops


def train_step(torch, model, opt, ids, device):
    # Backward runs outside the autocast region, as PyTorch advises; its ops take the dtypes
    # autocast chose in the forward, so the matmuls' gradients are bf16 too.
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def measure_shape(torch, transformers, name, args, ceiling):
    """Builds the model, times its training steps and returns the figures; the model and the
    optimizer are freed when it returns."""
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = build_model(torch, transformers, name, args)
    c = model.config
    total, active = count_params(model)
    moe = bool(getattr(c, "num_local_experts", 0))
    log(f"{name}: {c.num_hidden_layers} layers, {total / 1e6:.1f}M params ({active / 1e6:.1f}M active), "
        f"attention {c._attn_implementation}" + (f", experts {c._experts_implementation}" if moe else ""))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=args.device == "cuda")
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, c.vocab_size, (args.batch, args.seq_len), generator=gen).to(args.device)
               for _ in range(args.warmup + args.steps)]
    for ids in batches[:args.warmup]:
        train_step(torch, model, opt, ids, args.device)
    synchronize(torch, args.device)
    start = time.perf_counter()
    for ids in batches[args.warmup:]:
        loss = train_step(torch, model, opt, ids, args.device)
    synchronize(torch, args.device)
    step_s = (time.perf_counter() - start) / args.steps
    tokens_per_s = args.batch * args.seq_len / step_s
    tflops = tokens_per_s * train_flops_per_token(c, args.seq_len) / 1e12
    result = {
        "tokens_per_s": round(tokens_per_s, 1),
        "step_s": round(step_s, 4),
        "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if args.device == "cuda" else None,
        "params_total": total,
        "params_active": active,
        "model_tflops": round(tflops, 3),
        "mfu_vs_ceiling": round(tflops / ceiling, 4),
        "loss": round(loss.item(), 4),
        "attn_implementation": c._attn_implementation,
    }
    if moe:
        result["experts_implementation"] = c._experts_implementation
    log(f"{name}: {result['tokens_per_s']:.0f} tokens/s, {step_s:.3f} s per step, "
        f"{result['model_tflops']} TFLOP/s, loss {result['loss']}")
    return result


def run_shape(torch, transformers, name, args, ceiling):
    try:
        result = measure_shape(torch, transformers, name, args, ceiling)
    except torch.OutOfMemoryError:
        log(f"{name}: out of memory")
        result = {"error": "out of memory"}
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return result


def print_table(result):
    for key, value in result.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<24} {v}")
        else:
            print(f"{key:<26} {value}")


def main():
    args = parse_args()
    torch, transformers = import_libs(args.device)
    ceiling = gemm_ceiling_tflops(torch, args.device, args.gemm_size)
    log(f"bf16 GEMM {args.gemm_size}^3: {ceiling:.1f} TFLOP/s")
    result = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "gemm_size": args.gemm_size,
        "gemm_bf16_tflops": round(ceiling, 2),
    }
    for name in args.shape:
        result[name] = run_shape(torch, transformers, name, args, ceiling)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Measure PyTorch / Hugging Face transformers throughput on the CPU.

Builds two randomly initialised float32 models with the same shapes that
upcycle trains, and times them with the default attention (sdpa):

  dense  LlamaForCausalLM with SmolLM2-135M's shape (30 layers, d=576).
  moe    MixtralForCausalLM with the same shape and 4 experts, top-2, with
         the router load-balancing loss (coef 0.01) added to the loss.

For each model it reports:
  train tokens/s    forward + backward + clip_grad_norm_(1.0) + AdamW step
  forward tokens/s  model(input_ids) under torch.no_grad()
  bf16 train        the same with the forward and loss under torch.autocast("cpu", dtype=torch.bfloat16)
                    (f32 weights, gradients and AdamW; autocast's matmuls in bf16)
  bf16 forward      the forward under the same autocast
where tokens/s = batch * seq_len * steps / seconds, after --warmup untimed
steps.  And, where peft is installed:

  lora   the dense model with PEFT LoRA adapters of rank --lora-rank (16) on every
         linear layer of its blocks (q, k, v, o, gate, up, down), the base frozen:
         train tokens/s in f32 and under bf16 autocast (AdamW over the adapters).
  lora_moe  the same model as a LoRA-MoE written here the way MixLoRA computes it (no
         package ships one): PEFT LoRA on q, k, v and o, and each MLP a router over
         --lora-experts (8) experts, top-2 renormalised, expert e the frozen MLP with its
         own rank --lora-rank LoRA on gate, up and down; the base's gate and up run once
         on every token, each expert's down on its tokens. AdamW over the adapters and
         the routers.

Peak RSS of the whole process is reported at the end.

Run with a Python that has torch and transformers installed:
  python3 scripts/bench-torch.py                  # readable table
  python3 scripts/bench-torch.py --json --only moe
Progress goes to stderr; with --json only one JSON object goes to stdout.
Exits with code 77 when torch or transformers cannot be imported.
"""
import argparse
import gc
import json
import os
import resource
import sys
import time

SHAPE = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536,
    num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
    max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
    tie_word_embeddings=True, use_cache=False,
)
MOE = dict(
    num_local_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.01,
    output_router_logits=True, sliding_window=None,
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--steps", type=int, default=3, help="timed steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--only", choices=("dense", "moe", "lora", "lora_moe"))
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-experts", type=int, default=8)
    return p.parse_args()


def log(msg):
    print(f"bench-torch: {msg}", file=sys.stderr, flush=True)


def import_libs(threads):
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch
        import transformers
    except ImportError as e:
        log(f"needs torch and transformers ({e})")
        sys.exit(77)
    torch.set_num_threads(threads)
    return torch, transformers


def build_model(transformers, kind):
    if kind == "dense":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPE))
    return transformers.MixtralForCausalLM(transformers.MixtralConfig(**SHAPE, **MOE))


def timed(step, warmup, steps):
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def bench(torch, transformers, kind, args):
    torch.manual_seed(0)
    model = build_model(transformers, kind)
    cfg = model.config
    experts = f", experts={cfg._experts_implementation}" if kind == "moe" else ""
    log(f"{kind}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
        f"attn={cfg._attn_implementation}{experts}")
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (args.batch, args.seq_len), generator=gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)

    def train_step(autocast=None):  # autocast: None (f32) or the dtype of torch.autocast's matmuls
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        log(f"{kind}{' bf16' if autocast else ''} train step: loss {out.loss.item():.4f}")

    def forward_step():
        with torch.no_grad():
            model(input_ids=ids)

    def bf16_forward_step():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(input_ids=ids)

    tokens = args.batch * args.seq_len * args.steps
    model.train()
    train_s = timed(train_step, args.warmup, args.steps)
    bf16_train_s = timed(lambda: train_step(torch.bfloat16), args.warmup, args.steps)
    model.eval()
    forward_s = timed(forward_step, args.warmup, args.steps)
    bf16_forward_s = timed(bf16_forward_step, args.warmup, args.steps)
    log(f"{kind}: train {train_s:.2f}s, bf16 train {bf16_train_s:.2f}s, forward {forward_s:.2f}s, "
        f"bf16 forward {bf16_forward_s:.2f}s "
        f"for {tokens} tokens")
    return {
        f"{kind}_train_tokens_per_s": round(tokens / train_s, 1),
        f"{kind}_bf16_train_tokens_per_s": round(tokens / bf16_train_s, 1),
        f"{kind}_forward_tokens_per_s": round(tokens / forward_s, 1),
        f"{kind}_bf16_forward_tokens_per_s": round(tokens / bf16_forward_s, 1),
    }


def bench_lora(torch, transformers, args):
    try:
        import peft
    except ImportError as e:
        log(f"lora: skipped, needs peft ({e})")
        return {}
    torch.manual_seed(0)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = peft.LoraConfig(r=args.lora_rank, lora_alpha=args.lora_rank, target_modules=targets, lora_dropout=0.0,
                             bias="none", task_type="CAUSAL_LM")
    model = peft.get_peft_model(build_model(transformers, "dense"), config)
    log(f"lora: peft {peft.__version__}, rank {args.lora_rank}")
    return time_adapter_training(torch, model, "lora", args)


def time_adapter_training(torch, model, kind, args):
    """Training steps of `model`'s trainable parameters (the base frozen), in f32 and under bf16
    autocast: {kind}_train_tokens_per_s and {kind}_bf16_train_tokens_per_s."""
    trained = [p for p in model.parameters() if p.requires_grad]
    log(f"{kind}: {sum(p.numel() for p in trained)} trained parameters")
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq_len), generator=gen)
    opt = torch.optim.AdamW(trained, lr=1e-5, weight_decay=0.0)

    def train_step(autocast=None):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast is not None):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        log(f"{kind}{' bf16' if autocast else ''} train step: loss {out.loss.item():.4f}")

    tokens = args.batch * args.seq_len * args.steps
    model.train()
    train_s = timed(train_step, args.warmup, args.steps)
    bf16_train_s = timed(lambda: train_step(torch.bfloat16), args.warmup, args.steps)
    log(f"{kind}: train {train_s:.2f}s, bf16 train {bf16_train_s:.2f}s for {tokens} tokens")
    return {f"{kind}_train_tokens_per_s": round(tokens / train_s, 1),
            f"{kind}_bf16_train_tokens_per_s": round(tokens / bf16_train_s, 1)}


def mixlora_mlp(torch, base, experts, rank):
    """MixLoRA's sparse MLP over the frozen LlamaMLP `base`: a router, and per expert LoRA terms on
    gate, up and down (A as PEFT draws it, B zero), alpha = rank."""
    import math

    class MixLoraMlp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.base = base
            hidden, inter = base.gate_proj.in_features, base.gate_proj.out_features
            self.router = torch.nn.Parameter(torch.randn(experts, hidden) * 0.02)
            shapes = {"gate": (hidden, inter), "up": (hidden, inter), "down": (inter, hidden)}
            self.a = torch.nn.ParameterDict()
            self.b = torch.nn.ParameterDict()
            for e in range(experts):
                for name, (fan_in, fan_out) in shapes.items():
                    bound = 1 / math.sqrt(fan_in)
                    self.a[f"{name}{e}"] = torch.nn.Parameter(torch.empty(rank, fan_in).uniform_(-bound, bound))
                    self.b[f"{name}{e}"] = torch.nn.Parameter(torch.zeros(fan_out, rank))

        def term(self, name, e, x):
            return (x @ self.a[f"{name}{e}"].T) @ self.b[f"{name}{e}"].T

        def forward(self, x):
            shape = x.shape
            x = x.reshape(-1, shape[-1])
            probs = torch.softmax((x @ self.router.T).float(), dim=-1)
            w, idx = torch.topk(probs, 2, dim=-1)
            w = (w / w.sum(dim=-1, keepdim=True)).to(x.dtype)
            gate, up = self.base.gate_proj(x), self.base.up_proj(x)
            out = torch.zeros_like(x)
            for e in range(experts):
                tok, slot = torch.where(idx == e)
                if tok.numel() == 0:
                    continue
                xe = x[tok]
                act = torch.nn.functional.silu(gate[tok] + self.term("gate", e, xe)) * (up[tok] + self.term("up", e, xe))
                y = self.base.down_proj(act) + self.term("down", e, act)
                out = out.index_add(0, tok, y * w[tok, slot, None])
            return out.reshape(shape)

    return MixLoraMlp()


def bench_lora_moe(torch, transformers, args):
    try:
        import peft
    except ImportError as e:
        log(f"lora_moe: skipped, needs peft ({e})")
        return {}
    torch.manual_seed(0)
    config = peft.LoraConfig(r=args.lora_rank, lora_alpha=args.lora_rank, target_modules=["q_proj", "k_proj", "v_proj",
                             "o_proj"], lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    model = peft.get_peft_model(build_model(transformers, "dense"), config)
    for layer in model.base_model.model.model.layers:
        layer.mlp = mixlora_mlp(torch, layer.mlp, args.lora_experts, args.lora_rank)
    log(f"lora_moe: {args.lora_experts} experts top-2, rank {args.lora_rank}")
    return time_adapter_training(torch, model, "lora_moe", args)


def print_table(result):
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


def main():
    args = parse_args()
    torch, transformers = import_libs(args.threads)
    result = {
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "threads": torch.get_num_threads(),
        "seq_len": args.seq_len,
        "batch": args.batch,
    }
    for kind in ("dense", "moe"):
        if args.only in (None, kind):
            result.update(bench(torch, transformers, kind, args))
            gc.collect()
    if args.only in (None, "lora"):
        result.update(bench_lora(torch, transformers, args))
        gc.collect()
    if args.only in (None, "lora_moe"):
        result.update(bench_lora_moe(torch, transformers, args))
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


if __name__ == "__main__":
    main()

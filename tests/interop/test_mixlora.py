#!/usr/bin/env python3
"""Interop for the LoRA-MoE: `upcycle tune --lora-experts` trains a MixLoRA folder on a tiny Llama
and on a tiny Qwen3 that transformers wrote. Its logits under `upcycle forward --adapter` must
equal (1) a torch MixLoRA written here from the folder's tensors alone (each layer's MLP replaced
by a router, softmax, top-k renormalised, and experts that are the base MLP with their own B·A
terms; the attention terms merged) and (2) transformers' MixtralForCausalLM (Qwen3MoeForCausalLM
for the Qwen3) loading what `upcycle export --merge-adapter` wrote. Exits 77 (skipped) without torch and transformers, or without
UPCYCLE_BINARY."""
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import transformers
    from safetensors.torch import load_file
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

from tiny_llama import TOKENS, upcycle_binary, write_tiny_llama, write_tiny_qwen3

BINARY = upcycle_binary()


def run(*args):
    r = subprocess.run([BINARY, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"upcycle {' '.join(args)} failed:\n{r.stderr}")




class MixLoraMlp(torch.nn.Module):
    """MixLoRA's sparse MLP from a folder's tensors: the base MLP shared, expert e adding its terms."""

    def __init__(self, base, tensors, layer, config):
        super().__init__()
        self.base, self.top_k, self.experts = base, config["top_k"], config["num_experts"]
        self.scale = config["lora_alpha"] / config["r"]
        self.router = tensors[f"mixlora.layers.{layer}.mlp.moe_gate.weight"].float()
        self.terms = {}
        for e in range(self.experts):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                stem = f"mixlora.layers.{layer}.mlp.{proj}.experts.{e}"
                if f"{stem}.lora_A.weight" in tensors:
                    self.terms[e, proj] = (tensors[f"{stem}.lora_A.weight"].float(), tensors[f"{stem}.lora_B.weight"].float())

    def proj(self, e, name, x):
        y = getattr(self.base, name)(x)
        if (e, name) in self.terms:
            a, b = self.terms[e, name]
            y = y + self.scale * (x @ a.T) @ b.T
        return y

    def forward(self, x):
        probs = torch.softmax(x @ self.router.T, dim=-1)
        w, idx = torch.topk(probs, self.top_k, dim=-1)
        w = w / w.sum(dim=-1, keepdim=True)
        out = torch.zeros_like(x)
        for e in range(self.experts):
            chosen = (idx == e)  # [..., k]
            if not chosen.any():
                continue
            act = torch.nn.functional.silu(self.proj(e, "gate_proj", x)) * self.proj(e, "up_proj", x)
            out = out + (w * chosen).sum(-1, keepdim=True) * self.proj(e, "down_proj", act)
        return out


def torch_mixlora_logits(base, folder):
    config = json.load(open(os.path.join(folder, "adapter_config.json")))
    tensors = load_file(os.path.join(folder, "adapter_model.safetensors"))
    model = transformers.AutoModelForCausalLM.from_pretrained(base).eval()
    scale = config["lora_alpha"] / config["r"]
    with torch.no_grad():
        for layer, block in enumerate(model.model.layers):
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                stem = f"mixlora.layers.{layer}.self_attn.{proj}"
                if f"{stem}.lora_A.weight" in tensors:
                    a, b = tensors[f"{stem}.lora_A.weight"].float(), tensors[f"{stem}.lora_B.weight"].float()
                    getattr(block.self_attn, proj).weight += scale * b @ a
            block.mlp = MixLoraMlp(block.mlp, tensors, layer, config)
        return model(torch.tensor([TOKENS])).logits[0].numpy()


def check_family(work, name, write_base, merged_class, failures):
    base = os.path.join(work, name)
    write_base(torch, transformers, base)
    data = os.path.join(work, "train.jsonl")
    with open(data, "w") as f:
        for s in range(8):
            ids = [(7 * s + 3 * i) % 40 for i in range(12)]
            f.write(json.dumps({"input_ids": ids, "labels": ids}) + "\n")
    run("tune", "--model", base, "--data", data, "--out", os.path.join(work, f"{name}_run"), "--steps", "6", "--lr",
        "0.05", "--batch-tokens", "24", "--lora-rank", "2", "--lora-experts", "4", "--lora-top-k", "2")
    folder = os.path.join(work, f"{name}_run", "final")
    out = os.path.join(work, f"{name}_logits.f32")
    run("forward", "--model", base, "--adapter", folder, "--tokens", ",".join(map(str, TOKENS)), "--out", out)
    ours = np.fromfile(out, dtype=np.float32).reshape(len(TOKENS), -1)

    reference = torch_mixlora_logits(base, folder)
    plain = transformers.AutoModelForCausalLM.from_pretrained(base).eval()
    with torch.no_grad():
        base_logits = plain(torch.tensor([TOKENS])).logits[0].numpy()
    moved = np.abs(reference - base_logits).max()
    diff = np.abs(ours - reference).max()
    print(f"{name}: torch MixLoRA: max |logit diff| {diff:.3g} (the adapter moved the logits by {moved:.3g})")
    if not diff < 1e-4 or not moved > 1e-3:
        failures.append(f"{name}: upcycle forward --adapter differs from the torch MixLoRA")

    moe = os.path.join(work, f"{name}_moe")
    run("export", base, moe, "--merge-adapter", folder, "--dtype", "f32", "-q")
    merged = merged_class.from_pretrained(moe).eval()
    with torch.no_grad():
        theirs = merged(torch.tensor([TOKENS])).logits[0].numpy()
    diff = np.abs(ours - theirs).max()
    print(f"{name}: {merged_class.__name__} on the merged export: max |logit diff| {diff:.3g}")
    if not diff < 1e-4:
        failures.append(f"{name}: the merged {merged_class.__name__}'s logits differ from the LoRA-MoE's")


def main():
    failures = []
    with tempfile.TemporaryDirectory() as work:
        check_family(work, "llama", write_tiny_llama, transformers.MixtralForCausalLM, failures)
        check_family(work, "qwen3", write_tiny_qwen3, transformers.Qwen3MoeForCausalLM, failures)
    if failures:
        sys.exit("\n".join(failures))
    print("ok")


if __name__ == "__main__":
    main()

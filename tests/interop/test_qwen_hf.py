#!/usr/bin/env python3
"""Qwen3 and Qwen2, and the MoEs `upcycle convert` makes of them, against Hugging Face
transformers' own Qwen3ForCausalLM, Qwen3MoeForCausalLM and Qwen2MoeForCausalLM.

A Qwen3-shaped model (`upcycle init` from a config: per-head q/k norms, head_dim 48 apart from
hidden / heads = 32, tied embeddings, std 0.1 so the layers do something, the norms' weights
random too through a second export) is loaded by transformers; its logits must equal
`upcycle forward`'s within 1e-4 relative, and `upcycle generate` greedy tokens must be
transformers' greedy tokens. Three such models go through `upcycle convert` (UpIT, 4 experts
top-2, random routers), per-expert and fused: transformers' Qwen3MoeForCausalLM loads each folder
with logits equal to ours within 1e-4 relative.

Three Qwen2-shaped models (q/k/v biases and norms random) go through `upcycle convert` (BTX, 3
experts top-2, random routers) into Qwen2-MoEs: the shared expert their mean FFN with top-k
weights renormalised, the same not renormalised, and fused with the shared expert zero;
Qwen2MoeForCausalLM loads each with logits equal to ours, and a Qwen2-MoE made by `upcycle init`
(experts narrower than its shared expert, Qwen's unnormalised routing) too. Exits 77 (skipped)
without torch, transformers and safetensors.
"""
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    from safetensors.numpy import load_file, save_file
    from transformers import AutoModelForCausalLM
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

BINARY = os.environ.get("UPCYCLE_BINARY")
if not BINARY:
    sys.exit("UPCYCLE_BINARY is not set (ctest sets it to the built upcycle)")

QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 258, "hidden_size": 128,
    "intermediate_size": 256, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 48, "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
    "tie_word_embeddings": True, "attention_bias": False, "use_sliding_window": False, "hidden_act": "silu",
    "eos_token_id": 257, "torch_dtype": "float32",
}


def run(*args):
    done = subprocess.run([BINARY, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"FAIL: upcycle {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def randomise_norms(folder, seed):
    """init sets norms to one and biases to zero; random ones make a wrong norm or bias show."""
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    rng = np.random.default_rng(seed)
    for name, t in tensors.items():
        if name.endswith("norm.weight"):
            tensors[name] = (1 + 0.5 * rng.standard_normal(t.shape)).astype(t.dtype)
        if name.endswith(".bias"):
            tensors[name] = (0.5 * rng.standard_normal(t.shape)).astype(t.dtype)
    save_file(tensors, path, metadata={"format": "pt"})


def logits_of(model, tokens, tmp):
    out = os.path.join(tmp, "logits.bin")
    run("forward", "--model", model, "--tokens", ",".join(map(str, tokens)), "--out", out, "--overwrite")
    ours = np.fromfile(out, dtype=np.float32).reshape(len(tokens), -1)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    with torch.no_grad():
        theirs = hf(torch.tensor([tokens])).logits[0].numpy()
    return ours, theirs, hf


def check_close(name, ours, theirs):
    err = np.abs(ours - theirs).max() / np.abs(theirs).max()
    print(f"{name}: max relative difference {err:.2e}")
    if not err < 1e-4:
        sys.exit(f"FAIL: {name} logits differ from transformers' by {err:.2e}")


TOKENS = [84, 104, 101, 32, 113, 117, 105, 99, 107, 32, 98, 114, 111, 119, 110]


def init(tmp, name, config, seed):
    path = os.path.join(tmp, name)
    run("init", "--config", config, "--tokenizer", "bytes", "--std", "0.1", "--seed", str(seed), "--out", path, "-q")
    randomise_norms(path, seed)
    return path


def check_qwen2_moe(tmp):
    config = os.path.join(tmp, "qwen2.json")
    json.dump(dict(QWEN3, architectures=["Qwen2ForCausalLM"], model_type="qwen2", head_dim=32, attention_bias=True),
              open(config, "w"))
    dense = [init(tmp, f"qwen2_{seed}", config, seed) for seed in (6, 7, 8)]
    made = [("mean", ["--shared-expert", "mean"]), ("mean, unnormalised", ["--shared-expert", "mean", "--unnormalised-topk"]),
            ("zero, fused", ["--fused"])]
    for i, (name, options) in enumerate(made):
        moe = os.path.join(tmp, f"qwen2_moe_{i}")
        run("convert", "--checkpoints", *dense, "--method", "btx", "--top-k", "2", "--router", "random", "--seed", "1",
            *options, "--out", moe)
        ours, theirs, hf = logits_of(moe, TOKENS, tmp)
        if type(hf).__name__ != "Qwen2MoeForCausalLM":
            sys.exit(f"FAIL: transformers loads the converted folder as {type(hf).__name__}")
        check_close(f"qwen2_moe (upcycle convert, shared expert {name}) forward", ours, theirs)
    json.dump(dict(QWEN3, architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe", head_dim=32, attention_bias=True,
                   num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=192,
                   norm_topk_prob=False, tie_word_embeddings=False), open(config, "w"))
    ours, theirs, _ = logits_of(init(tmp, "qwen2_moe_init", config, 9), TOKENS, tmp)
    check_close("qwen2_moe (upcycle init, unnormalised top-k) forward", ours, theirs)


def main():
    tokens = TOKENS
    with tempfile.TemporaryDirectory() as tmp:
        check_qwen2_moe(tmp)
        config = os.path.join(tmp, "qwen3.json")
        json.dump(QWEN3, open(config, "w"))
        model = os.path.join(tmp, "qwen3")
        run("init", "--config", config, "--tokenizer", "bytes", "--std", "0.1", "--seed", "3", "--out", model, "-q")
        randomise_norms(model, 3)
        ours, theirs, hf = logits_of(model, tokens, tmp)
        check_close("qwen3 forward", ours, theirs)
        generated = json.loads(run("generate", "--model", model, "--prompt", "The quick brown fox",
                                   "--max-new-tokens", "24", "--json"))["ids"]
        prompt = [int(t) for t in run("tokenize", "--tokenizer", model, "--text", "The quick brown fox").split()]
        with torch.no_grad():
            greedy = hf.generate(torch.tensor([prompt]), max_new_tokens=len(generated), do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
        if greedy[: len(generated)] != generated:
            sys.exit(f"FAIL: qwen3 greedy tokens {generated}, transformers' {greedy}")
        print(f"qwen3 generate: the same {len(generated)} greedy tokens")

        dense = [model]
        for seed in (4, 5):
            path = os.path.join(tmp, f"qwen3_{seed}")
            run("init", "--config", config, "--tokenizer", "bytes", "--std", "0.1", "--seed", str(seed), "--out", path, "-q")
            randomise_norms(path, seed)
            dense.append(path)
        moe = os.path.join(tmp, "qwen3_moe")
        run("convert", "--checkpoints", *dense, "--experts", "4", "--top-k", "2", "--router", "random", "--seed", "1",
            "--out", moe)
        ours, theirs, hf = logits_of(moe, tokens, tmp)
        if type(hf).__name__ != "Qwen3MoeForCausalLM":
            sys.exit(f"FAIL: transformers loads the converted folder as {type(hf).__name__}")
        check_close("qwen3_moe (upcycle convert) forward", ours, theirs)
        fused = os.path.join(tmp, "qwen3_moe_fused")  # transformers v5's fused experts
        run("convert", "--checkpoints", *dense, "--experts", "4", "--top-k", "2", "--router", "random", "--seed", "1",
            "--fused", "--out", fused)
        ours, theirs, _ = logits_of(fused, tokens, tmp)
        check_close("qwen3_moe (upcycle convert --fused) forward", ours, theirs)


if __name__ == "__main__":
    main()

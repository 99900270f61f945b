#!/usr/bin/env python3
"""A converted MoE against Hugging Face transformers' own Mixtral.

Three dense llama checkpoints (`upcycle init --preset tiny`, seeds 1-3, std 0.1 so the layers do
something) go through `upcycle convert` (UpIT, 5 experts top-2). transformers'
MixtralForCausalLM loads the folder, and its logits must equal `upcycle forward`'s within 1e-4
relative; the same for sparse upcycling against the dense LlamaForCausalLM. Exits 77 (skipped)
without torch and transformers.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM
except ImportError:
    sys.exit(77)

BINARY = os.environ.get("UPCYCLE_BINARY")
if not BINARY:
    sys.exit("UPCYCLE_BINARY is not set (ctest sets it to the built upcycle)")


def run(*args):
    subprocess.run([BINARY, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def our_logits(model, tokens, out):
    run("forward", "--model", model, "--tokens", ",".join(map(str, tokens)), "--out", out)
    return np.fromfile(out, dtype=np.float32).reshape(len(tokens), -1)


def their_logits(model, tokens):
    m = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    m.eval()
    with torch.no_grad():
        return m(torch.tensor([tokens])).logits[0].numpy()


def check(name, ours, theirs):
    err = np.abs(ours - theirs).max() / np.abs(theirs).max()
    print(f"{name}: max relative difference {err:.2e}")
    if not err < 1e-4:
        sys.exit(f"{name}: logits differ from transformers' by {err:.2e}")


def main():
    tokens = [1, 17, 250, 3, 499, 42, 7, 311, 100, 5]
    with tempfile.TemporaryDirectory() as tmp:
        dense = []
        for seed in (1, 2, 3):
            path = os.path.join(tmp, f"d{seed}")
            run("init", "--preset", "tiny", "--seed", str(seed), "--std", "0.1", "--out", path, "-q")
            dense.append(path)
        upit = os.path.join(tmp, "upit")
        run("convert", "--checkpoints", *dense, "--experts", "5", "--top-k", "2", "--seed", "1", "--router", "random", "--out", upit)
        check("upit mixtral", our_logits(upit, tokens, os.path.join(tmp, "a.bin")), their_logits(upit, tokens))
        sparse = os.path.join(tmp, "sparse")
        run("convert", "--checkpoints", dense[0], "--method", "sparse", "--experts", "4", "--out", sparse)
        check("sparse vs dense llama", our_logits(sparse, tokens, os.path.join(tmp, "b.bin")),
              their_logits(dense[0], tokens))


if __name__ == "__main__":
    main()

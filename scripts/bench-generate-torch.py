#!/usr/bin/env python3
"""Greedy generation speed of Hugging Face transformers, to set beside `upcycle generate`.

    scripts/bench-generate-torch.py MODEL_FOLDER [--prompt TEXT] [--tokens 200] [--threads 2] [--json]

MODEL_FOLDER is a Hugging Face folder (`upcycle export model.gguf FOLDER` makes one from a GGUF).
It runs `model.generate` in f32 on the CPU, exactly --tokens new tokens, after a short warm-up,
and prints decode tokens/s (--json: one object with decode_tokens_per_s); then run
    upcycle generate --model MODEL_FOLDER --prompt TEXT --max-new-tokens N --json
on the same folder in the same session for ours. Exits 77 without torch and transformers.
"""
import argparse
import json
import sys
import time

try:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError:
    sys.exit(77)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    ids = tok(a.prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        model.generate(ids, max_new_tokens=8, do_sample=False)
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=a.tokens, min_new_tokens=a.tokens, do_sample=False)
        seconds = time.perf_counter() - start
    n = out.shape[1] - ids.shape[1]
    if a.json:
        print(json.dumps({"tokens": n, "decode_tokens_per_s": n / seconds}))
        return
    print(f"transformers generate: {n} new tokens in {seconds:.2f} s = {n / seconds:.1f} tokens/s "
          f"(prompt {ids.shape[1]} tokens, {a.threads} threads)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Greedy decoding speed of a peer, to set beside `upcycle generate` (scripts/bench-generate.sh).

    scripts/bench-generate-peer.py llama.cpp MODEL.gguf [--prompt TEXT] [--tokens 128] [--threads 2] [--json]
    scripts/bench-generate-peer.py transformers MODEL_FOLDER [the same options]

llama.cpp (llama-cpp-python): exactly --tokens new tokens after the plain-text prompt, greedy,
end of text suppressed; decoding tokens/s from llama.cpp's own counters (the tokens after the
prompt over the time spent evaluating them). transformers: `model.generate` in f32 on the CPU,
exactly --tokens new tokens after a short warm-up; new tokens over the whole call. --json prints
one object (tokens, decode_tokens_per_s; llama.cpp adds text and prompt_tokens). Exits 77 when
the peer's Python modules are missing.
"""
import argparse
import json
import sys
import time


def llama_cpp_run(a):
    try:
        import llama_cpp
    except ImportError:
        sys.exit(77)
    llm = llama_cpp.Llama(model_path=a.model, n_ctx=a.tokens + 64, n_threads=a.threads, n_threads_batch=a.threads,
                          verbose=False)
    eos = llm.token_eos()
    out = llm.create_completion(a.prompt, max_tokens=a.tokens, temperature=0.0, top_k=1,
                                logit_bias={eos: -1e9} if eos >= 0 else None)
    perf = llama_cpp.llama_perf_context(llm.ctx)
    return {"text": out["choices"][0]["text"], "tokens": out["usage"]["completion_tokens"],
            "prompt_tokens": out["usage"]["prompt_tokens"], "decode_tokens_per_s": perf.n_eval / (perf.t_eval_ms / 1e3)}


def transformers_run(a):
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        sys.exit(77)
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
    return {"tokens": n, "decode_tokens_per_s": n / seconds}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("peer", choices=["llama.cpp", "transformers"])
    p.add_argument("model")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    result = (llama_cpp_run if a.peer == "llama.cpp" else transformers_run)(a)
    if a.json:
        print(json.dumps(result))
    else:
        print(f"{a.peer}: {result['tokens']} new tokens, decoding {result['decode_tokens_per_s']:.1f} tokens/s "
              f"({a.threads} threads)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Greedy decoding speed of llama.cpp (llama-cpp-python), to set beside `upcycle generate`.

    scripts/bench-generate-llama.py MODEL.gguf [--prompt TEXT] [--tokens 128] [--threads 2] [--json]

Generates exactly --tokens new tokens greedily (end of text suppressed) after the plain-text
prompt, and prints the decoding tokens/s from llama.cpp's own counters (the tokens after the
prompt over the time spent evaluating them), and the text. Exits 77 without llama_cpp.
"""
import argparse
import json
import sys

try:
    import llama_cpp
    from llama_cpp import Llama
except ImportError:
    sys.exit(77)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    llm = Llama(model_path=a.model, n_ctx=a.tokens + 64, n_threads=a.threads, n_threads_batch=a.threads,
                verbose=False)
    eos = llm.token_eos()
    out = llm.create_completion(a.prompt, max_tokens=a.tokens, temperature=0.0, top_k=1,
                                logit_bias={eos: -1e9} if eos >= 0 else None)
    perf = llama_cpp.llama_perf_context(llm.ctx)
    rate = perf.n_eval / (perf.t_eval_ms / 1e3)
    result = {"text": out["choices"][0]["text"], "tokens": out["usage"]["completion_tokens"],
              "prompt_tokens": out["usage"]["prompt_tokens"], "decode_tokens_per_s": rate}
    if a.json:
        print(json.dumps(result))
    else:
        print(f"llama.cpp: {result['tokens']} new tokens, decoding {rate:.1f} tokens/s ({a.threads} threads)")


if __name__ == "__main__":
    main()

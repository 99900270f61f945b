#!/usr/bin/env python3
"""Encoding throughput of `upcycle tokenize` against Hugging Face `tokenizers`, same text, same vocabulary.

    UPCYCLE_BINARY=build/upcycle/upcycle python3 tests/interop/bench_tokenizer.py [--mb 4] [--pre llama3]

The text (about --mb megabytes) is the llama.cpp test strings plus seeded generated prose, code
and numbers. The vocabulary is GPT-2's from ../shared/tokenizers, as a tokenizer.json with the
chosen pre-tokenizer (gpt2, smollm, llama3, qwen2), which both sides read. upcycle runs as a
process on a file: its load time (the same command on an empty file) is measured apart and
taken off. Hugging Face encodes the whole text in one call (one thread), then line by line with
encode_batch (all cores). Then the Llama-2 vocabulary: upcycle's own SentencePiece BPE on the GGUF
against the sentencepiece library on a tokenizer.model written from it. Each pair produces the
same ids, checked. Not run by ctest.
"""
import argparse
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_tokenizer import PRE_TOKENIZERS, VOCABS, GGUFReader, read_gguf_vocab, tokenizer_json  # noqa: E402

import tokenizers  # noqa: E402

WORDS = ("the of and to in is was for that with as on by it from at his an were are which be this had not "
         "or has but have first their its one new after they who also been two more other time into "
         "model expert router layer token weight gradient Mixture upcycling dense sparse training data "
         "don't it's we're they've I'll she'd Paris München naïve café Tokyo 東京 Москва").split()


def generated_text(megabytes, seed=0):
    with open(os.path.join(VOCABS, "ggml-vocab-gpt-2.gguf.inp"), encoding="utf-8") as f:
        tests = f.read().split("\n__ggml_vocab_test__\n")[:-1]
    rng = random.Random(seed)
    parts, size = [], 0
    while size < megabytes * 1e6:
        kind = rng.random()
        if kind < 0.7:
            words = [rng.choice(WORDS) for _ in range(rng.randint(5, 25))]
            end = rng.choice([".", ",", "!", "?", ":"]) + rng.choice([" ", " ", "\n", "\n\n"])
            piece = " ".join(words).capitalize() + end
        elif kind < 0.8:
            number = rng.randint(0, 10 ** rng.randint(1, 9))
            piece = f"{number} {rng.random():.4f} {rng.randint(1900, 2030)}-{rng.randint(1, 12):02d} "
        elif kind < 0.9:
            piece = f"def f{rng.randint(0, 99)}(x):\n    return x * {rng.randint(2, 9)}  # {rng.choice(WORDS)}\n\n"
        else:
            piece = rng.choice(tests) + "\n"
        parts.append(piece)
        size += len(piece.encode("utf-8"))
    return "".join(parts)


def best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def sentencepiece_model(gguf_path, path):
    """A tokenizer.model (SentencePiece's ModelProto, protobuf wire format by hand) holding a GGUF
    SentencePiece vocabulary: pieces with scores and types, BPE with byte fallback, no normalization."""
    def varint(v):
        out = b""
        while v >= 0x80:
            out, v = out + bytes([0x80 | (v & 0x7F)]), v >> 7
        return out + bytes([v])

    def field(number, payload):
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    def number(number, v):
        return varint(number << 3) + varint(v)

    r = GGUFReader(gguf_path)
    parts = {k: [r.fields[k].parts[i] for i in r.fields[k].data]
             for k in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")}
    pieces = (field(1, bytes(t)) + varint(2 << 3 | 5) + struct.pack("<f", float(s[0])) + number(3, int(ty[0]))
              for t, s, ty in zip(*parts.values()))
    proto = b"".join(field(1, piece) for piece in pieces)
    proto += field(2, number(3, 2) + number(35, 1)) + field(3, field(1, b"identity") + number(3, 1) + number(4, 0))
    with open(path, "wb") as f:
        f.write(proto)


def time_upcycle(binary, tokenizer, text_path, empty_path, repeats):
    """Seconds encoding (loading taken off), seconds loading, and the ids."""
    def run(path):
        return subprocess.run([binary, "tokenize", "--tokenizer", tokenizer, "--file", path],
                              check=True, capture_output=True).stdout

    load, _ = best_time(lambda: run(empty_path), repeats)
    total, out = best_time(lambda: run(text_path), repeats)
    return total - load, load, [int(x) for x in out.split()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="megabytes of text (default 4)")
    parser.add_argument("--pre", default="gpt2", choices=sorted(PRE_TOKENIZERS), help="pre-tokenizer (default gpt2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, best kept (default 3)")
    args = parser.parse_args()
    binary = os.environ.get("UPCYCLE_BINARY", "")
    if not os.path.exists(binary):
        sys.exit("set UPCYCLE_BINARY to the upcycle executable")

    text = generated_text(args.mb)
    with tempfile.TemporaryDirectory() as tmp:
        tok_path, model_path, text_path, empty_path = (
            os.path.join(tmp, n) for n in ("tokenizer.json", "tokenizer.model", "text.txt", "empty.txt"))
        with open(tok_path, "w", encoding="utf-8") as f:
            json.dump(tokenizer_json(*read_gguf_vocab(os.path.join(VOCABS, "ggml-vocab-gpt-2.gguf")), args.pre,
                                     ignore_merges=args.pre == "llama3"), f)
        with open(text_path, "w", encoding="utf-8") as f:
            f.write(text)
        open(empty_path, "w").close()

        ours, load, ids = time_upcycle(binary, tok_path, text_path, empty_path, args.repeats)
        hf = tokenizers.Tokenizer.from_file(tok_path)
        one, encoding = best_time(lambda: hf.encode(text, add_special_tokens=False), args.repeats)
        lines = text.splitlines(keepends=True)
        batch, _ = best_time(lambda: hf.encode_batch(lines, add_special_tokens=False), args.repeats)
        if ids != encoding.ids:
            sys.exit("the ids differ from Hugging Face's")
        n = len(ids)
        print(f"text: {len(text.encode('utf-8')) / 1e6:.1f} MB, {n} GPT-2 tokens, pre-tokenizer {args.pre}, "
              f"{os.cpu_count()} cores")
        print(f"upcycle tokenize (tokenizer.json): {n / ours / 1e6:6.2f} M tokens/s  "
              f"({ours:.2f} s, and {load:.2f} s loading)")
        print(f"tokenizers encode (1 thread):      {n / one / 1e6:6.2f} M tokens/s  ({one:.2f} s)")
        print(f"tokenizers encode_batch:           {n / batch / 1e6:6.2f} M tokens/s  "
              f"({batch:.2f} s, lines, all cores)")
        print(f"upcycle / tokenizers: {one / ours:.1f}x one thread, {batch / ours:.1f}x batch")

        spm = os.path.join(VOCABS, "ggml-vocab-llama-spm.gguf")
        sentencepiece_model(spm, model_path)
        own, own_load, own_ids = time_upcycle(binary, spm, text_path, empty_path, args.repeats)
        lib, lib_load, lib_ids = time_upcycle(binary, model_path, text_path, empty_path, args.repeats)
        if own_ids != lib_ids:
            sys.exit("the Llama-2 ids differ between upcycle's SentencePiece and the sentencepiece library")
        n = len(own_ids)
        print(f"Llama-2 SentencePiece, {n} tokens:")
        print(f"upcycle (GGUF, own BPE by score):  {n / own / 1e6:6.2f} M tokens/s  "
              f"({own:.2f} s, and {own_load:.2f} s loading)")
        print(f"sentencepiece library:             {n / lib / 1e6:6.2f} M tokens/s  "
              f"({lib:.2f} s, and {lib_load:.2f} s loading)")
        print(f"upcycle / sentencepiece: {lib / own:.1f}x")


if __name__ == "__main__":
    main()

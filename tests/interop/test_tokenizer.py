#!/usr/bin/env python3
"""`upcycle tokenize` against Hugging Face `tokenizers` on the same vocabularies, ids compared exactly.

tokenizer.json files are built from the GPT-2 vocabulary in ../shared/tokenizers (tokens and
merges read with the `gguf` module) with each pre-tokenizer upcycle knows: GPT-2's ByteLevel
(with and without a prefix space), SmolLM2's Digits + ByteLevel, and the Llama-3 and Qwen2 Split
regexes (Qwen2 also with its NFC normalizer). Both sides encode the llama.cpp test strings plus
extra text aimed at the places the splits differ and at NFC; upcycle reads the same
tokenizer.json, and for GPT-2 the GGUF too. A second tokenizer.json per pre-tokenizer holds each
pre-token as one token, so the ids there compare the splits themselves, whatever merges would
hide. When the real SmolLM2 GGUF is there, its vocabulary is checked the same way. Exits 77
(skipped) when a module, the binary or the vocabulary folder is missing.
"""
import json
import os
import random
import subprocess
import sys
import tempfile

try:
    import tokenizers
    from gguf import GGUFReader
except ImportError as e:
    print(f"skipped: {e} (pip install tokenizers gguf)")
    sys.exit(77)

SOURCE = os.environ.get("UPCYCLE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
VOCABS = os.path.join(SOURCE, "..", "shared", "tokenizers")
BINARY = os.environ.get("UPCYCLE_BINARY", "")

REGEX = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "llama3": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
              r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
    "qwen2": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
             r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
}


def byte_level(use_regex, add_prefix_space=False):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True, "use_regex": use_regex}


PRE_TOKENIZERS = {
    "gpt2": byte_level(True),
    "gpt2-prefix-space": byte_level(True, add_prefix_space=True),
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level(True)]},
    **{name: {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": REGEX[name]}, "behavior": "Isolated", "invert": False},
        byte_level(False)]} for name in ("llama3", "qwen2")},
}


def read_gguf_vocab(path):
    r = GGUFReader(path)

    def values(key):
        field = r.fields[key]
        parts = [field.parts[i] for i in field.data]
        if field.types[-1].name == "STRING":
            return [bytes(p).decode("utf-8") for p in parts]
        return [int(p[0]) for p in parts]

    return values("tokenizer.ggml.tokens"), values("tokenizer.ggml.token_type"), values("tokenizer.ggml.merges")


def tokenizer_json(tokens, types, merges, pre, ignore_merges=False, pair_merges=False, nfc=False):
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, (t, ty) in enumerate(zip(tokens, types)) if ty == 3]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"} if nfc else None,
        "pre_tokenizer": PRE_TOKENIZERS[pre], "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": ignore_merges, "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": [m.split(" ", 1) for m in merges] if pair_merges else merges},
    }


def pre_token_json(pre, strings, nfc=False):
    """A tokenizer.json whose tokens are the byte alphabet plus every pre-token Hugging Face cuts
    the strings into, without merges and with ignore_merges: each pre-token is then one id, and a
    pre-token cut elsewhere falls apart into bytes, so the ids compare the splits themselves (and
    with NFC, the normalized text)."""
    probe = tokenizers.Tokenizer.from_str(json.dumps(tokenizer_json(["<|endoftext|>"], [3], [], pre, nfc=nfc)))
    normalize = probe.normalizer.normalize_str if nfc else (lambda s: s)
    alphabet = tokenizers.pre_tokenizers.ByteLevel.alphabet()
    words = {w for s in strings for w, _ in probe.pre_tokenizer.pre_tokenize_str(normalize(s))}
    tokens = ["<|endoftext|>"] + sorted(set(alphabet) | words)
    return tokenizer_json(tokens, [3] + [1] * (len(tokens) - 1), [], pre, ignore_merges=True, nfc=nfc)


def test_strings():
    with open(os.path.join(VOCABS, "ggml-vocab-gpt-2.gguf.inp"), encoding="utf-8") as f:
        strings = f.read().split("\n__ggml_vocab_test__\n")[:-1]
    strings += [
        "I'VE DON'T you'RE she'S we'Ll it'D i'M", "'s 's's ''s x'", "don\u2019t", "x'\u017fx 'SS \u212a'S",
        "1 12 123 1234 12345 123456 1234567 3.14159 1,000,000 \u0661\u0662\u0663\u0664 \u00bd\u00bd\u00bd\u00bd",
        "a \n\n  b\r\n\tc \r\r\n  \n", "  \n", "x  \t \n y", "end with spaces   ", "\n\n\n", " \n \n ",
        "word!Hello ?Hi \tTab \u00a0nbsp \u3000ideo \u2028ls \x85nel \u200bzw \x0b\x0c",
        "!!!\n\n(x)\r\n...\n", "\u00e9t\u00e9 caf\u00e9 e\u0301 \u0928\u092e\u0938\u094d\u0924\u0947",
        "\u0645\u0631\u062d\u0628\u0627 \u4f60\u597d\uff0c\u4e16\u754c\uff01",
        "\u3053\u3093\u306b\u3061\u306f \ud55c\uad6d\uc5b4",
        "\U0001f600\U0001f44d\U0001f3fd x\U00010400y",
        "<|endoftext|>Hi<|endoftext|> <|endoftext|>", "tabs\t\tand\t spaces", "MiXeD CaSe 'S 'T 'Re",
        "def f(x):\n    return x**2  # square\n\n\tpass\n",
    ]
    rng = random.Random(1)
    pool = list("aZ09 '\n\r\t.,!?-_()[]sStTlLdD") + ["\u00e9", "\u00bd", "\u4e2d", "\U0001f600", "\u00a0", "\u0301",
                                                      "\u0663", "  ", "\u3000", "\u017f", "\x85", "\u2028", "'re"]
    strings += ["".join(rng.choice(pool) for _ in range(rng.randint(1, 60))) for _ in range(200)]
    # For NFC: marks in every order, singletons, exclusions, Hangul jamo, precomposed letters.
    marks = ["\u0301", "\u0300", "\u0323", "\u0327", "\u0302", "\u0308", "\u0344", "\u093c", "\u05b0", "\u0345"]
    bases = list("aeiouAEOcnsy") + ["\u212b", "\u0958", "\u1100", "\u1161", "\u11a8", "\uac00", "\u00e9", "\u03b1",
                                    "\u0915", "\u05d0", "\u1f00", " ", "1"]
    strings += ["".join(rng.choice(bases) + "".join(rng.choice(marks) for _ in range(rng.randint(0, 3)))
                        for _ in range(rng.randint(1, 12))) for _ in range(100)]
    return strings


def upcycle(tokenizer, text, *more):
    r = subprocess.run([BINARY, "tokenize", "--tokenizer", tokenizer, "--text", text, *more], capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"upcycle tokenize failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    return r.stdout


def compare(name, tokenizer_path, hf, strings, separator="<|endoftext|>"):
    """Ids equal on every string; decoding gives back the text where Hugging Face's does too.

    The strings go in one call, joined by a special token: both sides cut the text at special
    tokens first and encode the pieces independently, so this checks each string as it stands
    alone. Only on a difference are the strings run one by one, to name them."""
    text = separator.join(strings)
    want = hf.encode(text, add_special_tokens=False).ids
    got = [int(x) for x in upcycle(tokenizer_path, text).split()]
    failures = 0
    if got != want:
        for s in strings:
            w = hf.encode(s, add_special_tokens=False).ids
            g = [int(x) for x in upcycle(tokenizer_path, s).split()]
            if g != w:
                failures += 1
                print(f"FAIL {name}: {s!r}\n  upcycle {g}\n  tokenizers {w}")
        failures = max(failures, 1)
    elif hf.decode(want, skip_special_tokens=False) == text:
        back = upcycle(tokenizer_path, " ".join(map(str, got)), "--decode").decode("utf-8", errors="replace")
        if back != text:
            failures += 1
            print(f"FAIL {name}: decoding does not give the text back")
    print(f"{name}: {len(strings)} strings, {len(want)} tokens: {'identical' if not failures else 'DIFFERENT'}")
    return failures


def main():
    gguf_path = os.path.join(VOCABS, "ggml-vocab-gpt-2.gguf")
    if not os.path.exists(gguf_path) or not os.path.exists(BINARY):
        print(f"skipped: needs {gguf_path} and UPCYCLE_BINARY (set by ctest)")
        return 77
    tokens, types, merges = read_gguf_vocab(gguf_path)
    strings = test_strings()
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for pre, nfc in [(pre, False) for pre in PRE_TOKENIZERS] + [("qwen2", True)]:
            name = pre + (" + NFC" if nfc else "")
            path = os.path.join(tmp, f"{name}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(tokenizer_json(tokens, types, merges, pre, ignore_merges=pre == "llama3",
                                         pair_merges=pre in ("llama3", "qwen2"), nfc=nfc), f)
            failures += compare(name, path, tokenizers.Tokenizer.from_file(path), strings)
            path = os.path.join(tmp, f"{name} pre-tokens.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(pre_token_json(pre, strings, nfc), f)
            failures += compare(f"{name} pre-tokens", path, tokenizers.Tokenizer.from_file(path), strings)
        gpt2_hf = tokenizers.Tokenizer.from_file(os.path.join(tmp, "gpt2.json"))
        failures += compare("gpt2 (GGUF)", gguf_path, gpt2_hf, strings)

        smol = os.environ.get("UPCYCLE_SMOLLM2_GGUF") or os.path.join(
            os.environ.get("UPCYCLE_CACHE", os.path.expanduser("~/.cache/upcycle")), "smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf")
        if os.path.exists(smol):
            path = os.path.join(tmp, "smollm2.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(tokenizer_json(*read_gguf_vocab(smol), "smollm"), f)
            hf = tokenizers.Tokenizer.from_file(path)
            chat = ["<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n<|im_start|>user\n"
                    "What is 2+2? Answer in 3 words.<|im_end|>\n<|im_start|>assistant\n",
                    "The quick brown fox jumps over the lazy dog in 1984, didn't it?",
                    "Mixture-of-Experts models route each token to 2 of 8 experts.\n\n  Indented\tcode()"]
            failures += compare("smollm2 (GGUF)", smol, hf, strings + chat)
            failures += compare("smollm2 (tokenizer.json)", path, hf, chat)
        else:
            print("smollm2: skipped (no SmolLM2 GGUF: scripts/fetch-smollm2.sh or UPCYCLE_SMOLLM2_GGUF)")
    print("ok" if failures == 0 else f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

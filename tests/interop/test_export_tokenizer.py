#!/usr/bin/env python3
"""`upcycle export` of the SmolLM2 GGUF writes a tokenizer.json that Hugging Face `tokenizers` reads
and encodes exactly as `upcycle tokenize` encodes with the GGUF itself (the strings of
test_tokenizer.py plus chat text). When `transformers` is importable, AutoTokenizer loads the
folder and renders the chat template. Exits 77 (skipped) when a module, the binary or the model
is missing.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_tokenizer as tt  # exits 77 itself when tokenizers or gguf is missing

SMOL = os.environ.get("UPCYCLE_SMOLLM2_GGUF") or os.path.join(
    os.environ.get("UPCYCLE_CACHE", os.path.expanduser("~/.cache/upcycle")), "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")

CHAT = [{"role": "system", "content": "You are a helpful AI assistant named SmolLM"},
        {"role": "user", "content": "What is 2+2? Answer in 3 words."}]


def check_transformers(folder, hf):
    """AutoTokenizer reads the folder, encodes like `tokenizers` and renders the chat template."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        print("transformers: skipped (not installed)")
        return 0
    tok = AutoTokenizer.from_pretrained(folder)
    text = "The quick brown fox, 1984!\n<|im_start|>x"
    failures = int(tok.encode(text, add_special_tokens=False) != hf.encode(text, add_special_tokens=False).ids)
    rendered = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    failures += int("<|im_start|>user\nWhat is 2+2?" not in rendered or not rendered.endswith("<|im_start|>assistant\n"))
    failures += int(tok.eos_token != "<|im_end|>" or tok.bos_token != "<|im_start|>")
    print(f"transformers: {'ok' if not failures else 'DIFFERENT'}: {rendered!r}")
    return failures


def main():
    if not os.path.exists(tt.BINARY) or not os.path.exists(SMOL):
        print(f"skipped: needs UPCYCLE_BINARY (set by ctest) and {SMOL} (scripts/fetch-smollm2.sh)")
        return 77
    strings = tt.test_strings() + [
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n<|im_start|>user\n"
        "What is 2+2? Answer in 3 words.<|im_end|>\n<|im_start|>assistant\n",
        "Mixture-of-Experts models route each token to 2 of 8 experts.\n\n  Indented\tcode()"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "hf")
        r = subprocess.run([tt.BINARY, "export", "-q", SMOL, folder], capture_output=True)
        if r.returncode != 0:
            print(f"FAIL: upcycle export: {r.stderr.decode(errors='replace')}")
            return 1
        hf = tt.tokenizers.Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        failures = tt.compare("smollm2 exported tokenizer.json vs GGUF", SMOL, hf, strings)
        with open(os.path.join(folder, "tokenizer_config.json"), encoding="utf-8") as f:
            config = json.load(f)
        failures += int("chat_template" not in config or config.get("eos_token") != "<|im_end|>")
        failures += check_transformers(folder, hf)
    print("ok" if failures == 0 else f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

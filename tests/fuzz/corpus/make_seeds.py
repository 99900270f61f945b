#!/usr/bin/env python3
"""Writes the binary fuzzers' seed corpora: a few tiny valid files (each under 4 KB) in
corpus/safetensors/ and corpus/gguf/, from the independent Python implementations
(safetensors.numpy, and gguf-py's GGUFWriter), so the seeds do not share our reader's mistakes.
The text corpora (config/, tokenizer/, instruction/, chat_template/, peft_adapter/) are small
files kept as they are: written by hand after the Hugging Face, PEFT and MixLoRA formats, and the
inputs of past findings.

    python3 tests/fuzz/corpus/make_seeds.py

Needs numpy, safetensors and gguf (scripts/deps.sh installs them). Deterministic: the same
package versions give the same bytes.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf.quants import quantize
from safetensors.numpy import save_file

HERE = Path(__file__).resolve().parent
LIMIT = 4096
rng = np.random.default_rng(1234)


def rand(*shape, dtype=np.float32):
    return rng.uniform(-1, 1, size=shape).astype(dtype)


# --- safetensors -------------------------------------------------------------------------------

def raw_safetensors(path, tensors, metadata=None):
    """A file written by hand, for dtypes numpy lacks (BF16): tensors is name -> (dtype, shape, bytes)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, payload) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(payload)]}
        data += payload
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def bf16_bytes(x):
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()


def safetensors_seeds(out):
    out.mkdir(parents=True, exist_ok=True)
    save_file({"w": rand(2, 3)}, str(out / "f32_one.safetensors"), metadata={"format": "pt"})
    save_file({
        "model.embed_tokens.weight": rand(6, 4),
        "model.norm.weight": rand(4),
        "half": rand(3, 2, 2, dtype=np.float16),
        "double": rand(2, 2, dtype=np.float64),
        "scalar": np.array(1.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }, str(out / "mixed.safetensors"))
    raw_safetensors(out / "bf16.safetensors", {"b": ("BF16", (4, 4), bf16_bytes(rand(4, 4)))},
                    metadata={"format": "pt", "note": "written by make_seeds.py"})
    raw_safetensors(out / "no_tensors.safetensors", {})


# --- GGUF --------------------------------------------------------------------------------------

T = gguf.GGMLQuantizationType


def f16_bits(value):
    return np.array([value], dtype=np.float16).view(np.uint8).tobytes()


def q4_k_block():
    # d, dmin (f16), 12 bytes of packed 6-bit scales and mins, 128 bytes of 4-bit quants.
    return f16_bits(0.01) + f16_bits(0.005) + rng.integers(0, 64, 12, dtype=np.uint8).tobytes() + \
        rng.integers(0, 256, 128, dtype=np.uint8).tobytes()


def q6_k_block():
    # 128 bytes of low 4 bits, 64 of high 2 bits, 16 int8 scales, d (f16).
    return rng.integers(0, 256, 128, dtype=np.uint8).tobytes() + rng.integers(0, 256, 64, dtype=np.uint8).tobytes() + \
        rng.integers(-32, 32, 16, dtype=np.int8).tobytes() + f16_bits(0.002)


def add_raw(writer, name, qtype, block_bytes, elements):
    data = np.frombuffer(block_bytes, dtype=np.uint8).copy()
    assert len(block_bytes) * gguf.GGML_QUANT_SIZES[qtype][0] == elements * gguf.GGML_QUANT_SIZES[qtype][1]
    # Given as bytes (one row), the writer derives the element shape from the type's block size.
    writer.add_tensor(name, data.reshape(1, -1), raw_dtype=qtype)


def write_gguf(path, fill):
    writer = gguf.GGUFWriter(str(path), arch="llama")
    fill(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tiny_llama(writer):
    # hidden 4, 2 heads (head_dim 2), 1 kv head, ffn 8, vocab 6, one layer, untied.
    hidden, ffn, vocab, kv_dim = 4, 8, 6, 2
    writer.add_context_length(16)
    writer.add_embedding_length(hidden)
    writer.add_block_count(1)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<unk>", "<s>", "</s>", "a", "b", "c"])
    # GGUF shapes are written fastest-first by the writer from numpy's slowest-first shapes.
    writer.add_tensor("token_embd.weight", rand(vocab, hidden))
    writer.add_tensor("blk.0.attn_norm.weight", rand(hidden))
    writer.add_tensor("blk.0.attn_q.weight", rand(hidden, hidden, dtype=np.float16))
    writer.add_tensor("blk.0.attn_k.weight", rand(kv_dim, hidden))
    writer.add_tensor("blk.0.attn_v.weight", rand(kv_dim, hidden))
    writer.add_tensor("blk.0.attn_output.weight", rand(hidden, hidden))
    writer.add_tensor("blk.0.ffn_norm.weight", rand(hidden))
    writer.add_tensor("blk.0.ffn_gate.weight", rand(ffn, hidden))
    writer.add_tensor("blk.0.ffn_up.weight", rand(ffn, hidden))
    writer.add_tensor("blk.0.ffn_down.weight", rand(hidden, ffn))
    writer.add_tensor("output_norm.weight", rand(hidden))
    writer.add_tensor("output.weight", rand(vocab, hidden))


def quant_types(writer):
    x = rand(1, 32)
    for qtype in (T.Q8_0, T.Q4_0, T.Q4_1):
        writer.add_tensor(f"q.{qtype.name.lower()}", quantize(x, qtype), raw_dtype=qtype)
    add_raw(writer, "q.q4_k", T.Q4_K, q4_k_block(), 256)
    add_raw(writer, "q.q6_k", T.Q6_K, q6_k_block(), 256)
    writer.add_tensor("p.bf16", quantize(rand(2, 4), T.BF16), raw_dtype=T.BF16)
    writer.add_tensor("p.f16", rand(2, 4, dtype=np.float16))


def all_value_types(writer):
    # A tokenizer-like file: metadata of every value type, no tensors.
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -5)
    writer.add_uint16("t.u16", 60000)
    writer.add_int16("t.i16", -30000)
    writer.add_uint32("t.u32", 4000000000)
    writer.add_int32("t.i32", -2000000000)
    writer.add_float32("t.f32", 1e-5)
    writer.add_uint64("t.u64", 2**63 + 5)
    writer.add_int64("t.i64", -(2**62))
    writer.add_float64("t.f64", 0.1)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "caf\u00e9 \u2615")
    writer.add_array("t.ints", [1, 2, 3])
    writer.add_array("t.floats", [0.5, -2.0])
    writer.add_array("t.strs", ["x", "", "yz"])
    writer.add_array("t.nested", [[1, 2], [3]])
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "ab"])
    writer.add_token_merges(["a b"])


def gguf_seeds(out):
    out.mkdir(parents=True, exist_ok=True)
    write_gguf(out / "tiny_llama.gguf", tiny_llama)
    write_gguf(out / "quant_types.gguf", quant_types)
    write_gguf(out / "value_types.gguf", all_value_types)
    # The same tiny model as GGUF v2 (v3 changed nothing but allowing big-endian files).
    v3 = (out / "tiny_llama.gguf").read_bytes()
    assert v3[4:8] == struct.pack("<I", 3)
    (out / "tiny_llama_v2.gguf").write_bytes(v3[:4] + struct.pack("<I", 2) + v3[8:])


def main():
    safetensors_seeds(HERE / "safetensors")
    gguf_seeds(HERE / "gguf")
    ok = True
    for path in sorted((HERE / "safetensors").iterdir()) + sorted((HERE / "gguf").iterdir()):
        size = path.stat().st_size
        print(f"{size:6d}  {path.relative_to(HERE)}")
        if size >= LIMIT:
            print(f"  too large: seeds stay under {LIMIT} bytes", file=sys.stderr)
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Our GGUF reading checked against the python `gguf` package (GGUFReader and
gguf.quants.dequantize) as the independent reference.

`upcycle export MODEL.gguf OUT --dtype f32` writes what our reader returns (dequantized, q/k rows
put back in Hugging Face order); numpy does the reference unpermutation of the reference
dequantization, and the two must be bit-identical.

1. A tiny llama GGUF written here with gguf.GGUFWriter from random Q4_K, Q6_K, Q4_0, Q8_0, Q4_1,
   F16 and F32 tensors (random bytes, sane f16 scales).
2. The real SmolLM2-135M-Instruct Q4_1 file, when present ($UPCYCLE_SMOLLM2_GGUF or the cache).

Exit 77 (skipped) when a module, the binary or every input is missing.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from gguf.quants import dequantize
    from safetensors.numpy import load_file
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

BINARY = os.environ.get("UPCYCLE_BINARY", "")

# GGUF name -> Hugging Face name, for the tensors checked here.
def hf_name(gguf_name):
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    _, layer, role, _ = gguf_name.split(".")
    return f"model.layers.{layer}." + {
        "attn_norm": "input_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_norm": "post_attention_layernorm",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }[role] + ".weight"


def reference(tensor, heads):
    """The tensor dequantized by the gguf package, rows in Hugging Face order (llama files)."""
    values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
    shape = [int(d) for d in reversed(tensor.shape)]  # GGUF lists the fastest dimension first
    values = values.reshape(shape)
    if heads:  # llama.cpp stored HF rows [heads, 2, D/2, cols] as [heads, D/2, 2, cols]
        rows = shape[0]
        values = values.reshape(heads, rows // heads // 2, 2, -1).swapaxes(1, 2).reshape(shape)
    return values


def export(model, out):
    result = subprocess.run([BINARY, "export", model, out, "--dtype", "f32", "--quiet"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"FAIL: upcycle export {model} exited {result.returncode}: {result.stderr.strip()}")
    ours = {}
    for shard in sorted(glob.glob(os.path.join(out, "model*.safetensors"))):
        ours.update(load_file(shard))
    with open(os.path.join(out, "config.json")) as f:
        return ours, json.load(f)


def compare(model, names, heads_of):
    """Exports `model` and checks each named GGUF tensor against the reference; returns the config."""
    with tempfile.TemporaryDirectory() as tmp:
        ours, config = export(model, os.path.join(tmp, "out"))
    reader = gguf.GGUFReader(model)
    by_name = {t.name: t for t in reader.tensors}
    failures = 0
    for name in names:
        t = by_name[name]
        want = reference(t, heads_of(name))
        got = ours[hf_name(name)]
        if got.shape != want.shape or got.dtype != np.float32 or not np.array_equal(got, want):
            diff = np.max(np.abs(got - want)) if got.shape == want.shape else "shape"
            print(f"FAIL {os.path.basename(model)} {name} ({t.tensor_type.name}): "
                  f"ours {got.shape} {got.dtype}, reference {want.shape}; max difference {diff}")
            failures += 1
        else:
            print(f"ok   {os.path.basename(model)} {name} ({t.tensor_type.name}) {list(want.shape)}")
    if failures:
        raise SystemExit(f"FAIL: {failures} tensors differ")
    return config


def random_blocks(rng, qtype, rows, cols):
    """Random blocks of a quantized type with small, finite f16 scales."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // block_elems, block_bytes), dtype=np.uint8)
    scale_offsets = {
        gguf.GGMLQuantizationType.Q8_0: [0],
        gguf.GGMLQuantizationType.Q4_0: [0],
        gguf.GGMLQuantizationType.Q4_1: [0, 2],
        gguf.GGMLQuantizationType.Q4_K: [0, 2],
        gguf.GGMLQuantizationType.Q6_K: [208],
    }[qtype]
    for at in scale_offsets:
        scales = rng.uniform(-0.02, 0.02, size=blocks.shape[0]).astype(np.float16)
        blocks[:, at:at + 2] = scales.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, -1)


def synthetic_check(tmp):
    H, heads, kv_heads, I, V = 256, 2, 1, 512, 16
    D = H // heads
    Q = gguf.GGMLQuantizationType
    path = os.path.join(tmp, "kquants.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.add_context_length(128)
    w.add_embedding_length(H)
    w.add_feed_forward_length(I)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(D)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(V)])
    rng = np.random.default_rng(3)
    layout = {  # name: (type, rows, cols) in Hugging Face order
        "token_embd.weight": (Q.F16, V, H),
        "blk.0.attn_norm.weight": (Q.F32, H, None),
        "blk.0.attn_q.weight": (Q.Q4_K, H, H),
        "blk.0.attn_k.weight": (Q.Q6_K, kv_heads * D, H),
        "blk.0.attn_v.weight": (Q.Q4_0, kv_heads * D, H),
        "blk.0.attn_output.weight": (Q.Q6_K, H, H),
        "blk.0.ffn_norm.weight": (Q.F32, H, None),
        "blk.0.ffn_gate.weight": (Q.Q4_K, I, H),
        "blk.0.ffn_up.weight": (Q.Q4_1, I, H),
        "blk.0.ffn_down.weight": (Q.Q4_K, H, I),
        "output_norm.weight": (Q.F32, H, None),
        "output.weight": (Q.Q8_0, V, H),
    }
    for name, (qtype, rows, cols) in layout.items():
        if qtype == Q.F32:
            w.add_tensor(name, rng.standard_normal(rows).astype(np.float32))
        elif qtype == Q.F16:
            w.add_tensor(name, rng.standard_normal((rows, cols)).astype(np.float16))
        else:
            w.add_tensor(name, random_blocks(rng, qtype, rows, cols), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    heads_of = {"blk.0.attn_q.weight": heads, "blk.0.attn_k.weight": kv_heads}
    compare(path, list(layout), lambda name: heads_of.get(name, 0))


def smollm2_path():
    env = os.environ.get("UPCYCLE_SMOLLM2_GGUF")
    if env and os.path.exists(env):
        return env
    cache = os.environ.get("UPCYCLE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "upcycle")
    path = os.path.join(cache, "smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.exists(path) else None


def smollm2_check(path):
    names = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.7.attn_q.weight",
             "blk.29.attn_k.weight", "blk.0.attn_v.weight", "blk.5.ffn_down.weight", "blk.0.attn_norm.weight",
             "output_norm.weight"]
    heads = lambda name: 9 if name.endswith("attn_q.weight") else 3 if name.endswith("attn_k.weight") else 0
    config = compare(path, names, heads)
    want = {"model_type": "llama", "num_hidden_layers": 30, "hidden_size": 576, "num_attention_heads": 9,
            "num_key_value_heads": 3, "vocab_size": 49152, "intermediate_size": 1536, "tie_word_embeddings": True}
    wrong = {k: config.get(k) for k, v in want.items() if config.get(k) != v}
    if wrong:
        raise SystemExit(f"FAIL: config.json differs from the model: {wrong}")
    print("ok   SmolLM2 config.json")


def main():
    if not BINARY or not os.path.exists(BINARY):
        print("skipped: UPCYCLE_BINARY is not set to the built upcycle")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        synthetic_check(tmp)
    path = smollm2_path()
    if path:
        smollm2_check(path)
    else:
        print("SmolLM2 GGUF absent (set UPCYCLE_SMOLLM2_GGUF): checked the synthetic file only")
    return 0


if __name__ == "__main__":
    sys.exit(main())

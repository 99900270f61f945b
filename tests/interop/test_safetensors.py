#!/usr/bin/env python3
"""Interop with the reference safetensors implementation: a tiny Llama folder written by Python's
safetensors is exported by `upcycle export` (sharded f32, then converted to bf16) and read back
by Python bit for bit; `upcycle inspect --json` reports the model. Exits 77 (skipped) without
numpy or safetensors."""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    from safetensors.numpy import load_file, save_file
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

BINARY = os.environ.get("UPCYCLE_BINARY")
if not BINARY:
    print("skipped: UPCYCLE_BINARY is not set")
    sys.exit(77)

VOCAB, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS = 40, 16, 24, 2, 4, 2
HEAD_DIM = HIDDEN // HEADS
SHARD_LIMIT = 2000  # --shard-size 2kB


def llama_tensors(rng):
    """Every tensor of a Hugging Face Llama with the sizes above, f32."""
    shapes = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        shapes[p + "input_layernorm.weight"] = (HIDDEN,)
        shapes[p + "self_attn.q_proj.weight"] = (HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "self_attn.k_proj.weight"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "self_attn.v_proj.weight"] = (KV_HEADS * HEAD_DIM, HIDDEN)
        shapes[p + "self_attn.o_proj.weight"] = (HIDDEN, HEADS * HEAD_DIM)
        shapes[p + "post_attention_layernorm.weight"] = (HIDDEN,)
        shapes[p + "mlp.gate_proj.weight"] = (INTER, HIDDEN)
        shapes[p + "mlp.up_proj.weight"] = (INTER, HIDDEN)
        shapes[p + "mlp.down_proj.weight"] = (HIDDEN, INTER)
    shapes["model.norm.weight"] = (HIDDEN,)
    shapes["lm_head.weight"] = (VOCAB, HIDDEN)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def make_model(folder, tensors):
    os.makedirs(folder)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "a_field_upcycle_does_not_know": [1, 2],
    }
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        f.write('{"version": "1.0"}')
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})


def run(*args):
    result = subprocess.run([BINARY, *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"upcycle {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout


def bits(a):
    return a.view(np.uint32) if a.dtype == np.float32 else a.view(np.uint16)


def check_sharded_f32(out, tensors):
    with open(os.path.join(out, "model.safetensors.index.json")) as f:
        index = json.load(f)
    weight_map = index["weight_map"]
    assert sorted(weight_map) == sorted(tensors), "index lists other tensors than the model's"
    files = sorted(set(weight_map.values()))
    k = len(files)
    assert k > 3, f"only {k} shards for a 2 kB limit"
    assert files == [f"model-{i:05d}-of-{k:05d}.safetensors" for i in range(1, k + 1)], files
    assert not os.path.exists(os.path.join(out, "model.safetensors"))

    seen, total = {}, 0
    for name in files:
        path = os.path.join(out, name)
        shard = load_file(path)
        assert os.path.getsize(path) <= SHARD_LIMIT or len(shard) == 1, f"{name} over the limit"
        for tensor, value in shard.items():
            assert weight_map[tensor] == name, f"{tensor} is in {name}, the index says {weight_map[tensor]}"
            assert tensor not in seen, f"{tensor} in two shards"
            seen[tensor] = value
            total += value.nbytes
    assert seen.keys() == tensors.keys()
    for name, want in tensors.items():
        got = seen[name]
        assert got.dtype == np.float32 and got.shape == want.shape, name
        assert np.array_equal(bits(got), bits(want)), f"{name} differs"
    assert index["metadata"]["total_size"] == total == sum(t.nbytes for t in tensors.values())

    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["torch_dtype"] == "float32"
    assert config["a_field_upcycle_does_not_know"] == [1, 2]
    with open(os.path.join(out, "tokenizer.json")) as f:
        assert f.read() == '{"version": "1.0"}'


def read_raw(path):
    """Our own reading of a safetensors file (numpy has no bf16): name -> (dtype, shape, bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    return {k: (v["dtype"], tuple(v["shape"]), data[base + v["data_offsets"][0] : base + v["data_offsets"][1]])
            for k, v in header.items()}


def bf16_round(a):
    """f32 -> bf16 bits, round to nearest even on the upper 16 bits (no NaNs in the input)."""
    x = a.view(np.uint32).astype(np.uint64)
    return ((x + 0x7FFF + ((x >> 16) & 1)) >> 16).astype(np.uint16)


def check_bf16(out, tensors):
    raw = read_raw(os.path.join(out, "model.safetensors"))
    assert raw.keys() == tensors.keys()
    for name, want in tensors.items():
        dtype, shape, data = raw[name]
        assert dtype == "BF16" and shape == want.shape, name
        got = np.frombuffer(data, dtype="<u2").reshape(shape)
        assert np.array_equal(got, bf16_round(want)), f"{name}: not round-to-nearest-even bf16"
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["torch_dtype"] == "bfloat16"


def check_inspect(out, tensors):
    info = json.loads(run("inspect", out, "--json"))
    assert info["params"] == sum(t.size for t in tensors.values()), info["params"]
    assert info["tensors"] == len(tensors)
    assert info["layers"] == LAYERS
    assert info["hidden_size"] == HIDDEN
    assert info["vocab_size"] == VOCAB
    assert info["experts"] == 0
    assert info["format"] == "safetensors"


def main():
    tensors = llama_tensors(np.random.default_rng(1234))
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        make_model(src, tensors)
        out = os.path.join(tmp, "out")
        run("export", src, out, "--shard-size", "2kB", "--quiet")
        check_sharded_f32(out, tensors)
        check_inspect(out, tensors)

        out_bf16 = os.path.join(tmp, "out_bf16")
        run("export", out, out_bf16, "--dtype", "bf16", "--quiet")
        check_bf16(out_bf16, tensors)
        check_inspect(out_bf16, tensors)

        leftovers = [n for n in os.listdir(tmp) if re.search(r"partial", n)]
        assert not leftovers, f"temporary outputs left behind: {leftovers}"
    print("ok")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""HDF5 interop with h5py and numpy, both directions.

A tiny llama checkpoint is built in Python following README "HDF5 layout"; `upcycle inspect` must
read it; `upcycle export IN.h5 OUT.h5 --dtype bf16` must write uint16 datasets tagged "bf16"
whose bits equal numpy's round-to-nearest-even bf16 of the inputs; plain `export` must be bit
exact; h5py's own float16 datasets must read as f16. Exits 77 (skipped) without h5py or numpy.
"""
import json
import os
import subprocess
import sys
import tempfile

try:
    import h5py
    import numpy as np
except ImportError:
    sys.exit(77)

BINARY = os.environ.get("UPCYCLE_BINARY")
if not BINARY:
    sys.exit("UPCYCLE_BINARY is not set (ctest sets it to the built upcycle)")

H, I, V, L, KV = 16, 24, 40, 2, 8  # hidden, intermediate, vocab, layers, kv_heads * head_dim
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": V,
    "hidden_size": H,
    "intermediate_size": I,
    "num_hidden_layers": L,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "a_field_upcycle_does_not_know": {"kept": [1, 2, 3]},
}


def llama_shapes():
    """Hugging Face names and shapes, in canonical order."""
    shapes = [("model.embed_tokens.weight", (V, H))]
    for layer in range(L):
        p = f"model.layers.{layer}."
        shapes += [
            (p + "input_layernorm.weight", (H,)),
            (p + "self_attn.q_proj.weight", (H, H)),
            (p + "self_attn.k_proj.weight", (KV, H)),
            (p + "self_attn.v_proj.weight", (KV, H)),
            (p + "self_attn.o_proj.weight", (H, H)),
            (p + "post_attention_layernorm.weight", (H,)),
            (p + "mlp.gate_proj.weight", (I, H)),
            (p + "mlp.up_proj.weight", (I, H)),
            (p + "mlp.down_proj.weight", (H, I)),
        ]
    return shapes + [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]


def tensors(dtype=np.float32):
    rng = np.random.default_rng(1234)
    out = {name: rng.standard_normal(shape).astype(dtype) for name, shape in llama_shapes()}
    if dtype == np.float32:
        # bf16 rounding's hard cases: ties to even both ways, signed zero, infinities, the largest
        # float (rounds to infinity), subnormals.
        special = [1.00390625, 1.01171875, -0.0, np.inf, -np.inf, 3.4028235e38, 1e-45, -1.1754942e-38,
                   65504.0, -2.5, 0.1, 1.0 / 3.0, 0.0, 7.0, -1e-30, 1e30]
        out["model.norm.weight"] = np.array(special, dtype=np.float32)
    return out


def write_checkpoint(path, values):
    with h5py.File(path, "w", track_order=True) as f:
        f.attrs["format"] = "upcycle-checkpoint"
        f.attrs["format_version"] = np.int64(1)
        f.attrs["config"] = json.dumps(CONFIG)
        for name, _ in llama_shapes():
            f.create_dataset(name, data=values[name])


def upcycle(*args):
    return subprocess.run([BINARY, *args], capture_output=True, text=True)


def check(ok, what):
    if not ok:
        sys.exit("FAIL: " + what)


def text(attr):
    """A string attribute as str, whether h5py hands over str (variable length) or bytes (fixed)."""
    return attr.decode() if isinstance(attr, (bytes, np.bytes_)) else str(attr)


def bf16_bits(x):
    """numpy's round-to-nearest-even float32 -> bf16, as the high 16 bits."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def check_inspect(path, values):
    r = upcycle("inspect", path, "--json")
    check(r.returncode == 0, f"inspect {path}: exit {r.returncode}: {r.stderr}")
    j = json.loads(r.stdout)
    check(j["format"] == "hdf5", f"format {j['format']}")
    check(j["layers"] == L and j["hidden_size"] == H and j["vocab_size"] == V, f"config fields {j}")
    check(j["params"] == sum(v.size for v in values.values()), f"params {j['params']}")
    check(j["tensors"] == len(values), f"tensors {j['tensors']}")


def check_root_attributes(f):
    check(text(f.attrs["format"]) == "upcycle-checkpoint", "format attribute")
    check(int(f.attrs["format_version"]) == 1, "format_version attribute")
    check(json.loads(text(f.attrs["config"])) == CONFIG, "config attribute (unknown fields kept)")
    check(list(f.keys()) == [name for name, _ in llama_shapes()], f"dataset order {list(f.keys())}")


def check_bf16_export(src, out, values):
    r = upcycle("export", src, out, "--dtype", "bf16", "-q")
    check(r.returncode == 0, f"export --dtype bf16: exit {r.returncode}: {r.stderr}")
    with h5py.File(out, "r") as f:
        check_root_attributes(f)
        for name, x in values.items():
            ds = f[name]
            check(ds.dtype == np.uint16, f"{name}: dtype {ds.dtype}, expected uint16")
            check(text(ds.attrs["dtype"]) == "bf16", f"{name}: dtype attribute {ds.attrs['dtype']!r}")
            check(ds.shape == x.shape, f"{name}: shape {ds.shape}")
            check(np.array_equal(ds[()], bf16_bits(x)), f"{name}: bf16 bits differ from numpy's rounding")


def check_f32_export(src, out, values):
    r = upcycle("export", src, out, "-q")
    check(r.returncode == 0, f"export: exit {r.returncode}: {r.stderr}")
    with h5py.File(out, "r") as f:
        check_root_attributes(f)
        for name, x in values.items():
            ds = f[name]
            check(ds.dtype == np.dtype("<f4"), f"{name}: dtype {ds.dtype}")
            check("dtype" not in ds.attrs, f"{name}: f32 needs no dtype attribute")
            check(np.array_equal(ds[()].view(np.uint32), x.view(np.uint32)), f"{name}: f32 not bit exact")


def check_h5py_float16(tmp):
    """numpy float16 through h5py (an IEEE half type) reads as f16: exported as is, or widened."""
    values = tensors(np.float16)
    src = os.path.join(tmp, "half.h5")
    write_checkpoint(src, values)
    r = upcycle("inspect", src, "--json")
    check(r.returncode == 0 and json.loads(r.stdout)["dtype"] == "f16", f"inspect half: {r.stdout} {r.stderr}")
    kept, widened = os.path.join(tmp, "half_kept.h5"), os.path.join(tmp, "half_f32.h5")
    check(upcycle("export", src, kept, "-q").returncode == 0, "export half")
    check(upcycle("export", src, widened, "--dtype", "f32", "-q").returncode == 0, "export half --dtype f32")
    with h5py.File(kept, "r") as k, h5py.File(widened, "r") as w:
        for name, x in values.items():
            check(k[name].dtype == np.uint16 and text(k[name].attrs["dtype"]) == "f16", f"{name}: f16 tag")
            check(np.array_equal(k[name][()], x.view(np.uint16)), f"{name}: f16 bits")
            check(np.array_equal(w[name][()], x.astype(np.float32)), f"{name}: f16 -> f32")


def check_errors(tmp, values):
    path = os.path.join(tmp, "no_config.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("model.norm.weight", data=values["model.norm.weight"])
    r = upcycle("inspect", path)
    check(r.returncode == 2, f"missing config: exit {r.returncode}")
    check(path in r.stderr and "missing root attribute 'config'" in r.stderr, f"missing config: {r.stderr}")

    path = os.path.join(tmp, "int32.h5")
    write_checkpoint(path, {**values, "model.norm.weight": np.arange(H, dtype=np.int32)})
    r = upcycle("inspect", path)
    check(r.returncode == 2 and "dataset 'model.norm.weight': has type int32" in r.stderr, f"int32: {r.stderr}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        values = tensors()
        src = os.path.join(tmp, "in.h5")
        write_checkpoint(src, values)
        check_inspect(src, values)
        check_bf16_export(src, os.path.join(tmp, "bf16.h5"), values)
        check_f32_export(src, os.path.join(tmp, "f32.h5"), values)
        check_h5py_float16(tmp)
        check_errors(tmp, values)
    print("ok")


if __name__ == "__main__":
    main()

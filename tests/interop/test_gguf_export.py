#!/usr/bin/env python3
"""`upcycle export MODEL OUT.gguf` checked by the python `gguf` package and by llama.cpp itself.

Models: a llama, a Llama 3 (its rope_scaling), a qwen2, a qwen3 and a qwen2_moe (`upcycle init`, the
byte-level ChatML tokenizer, std 0.5 so that greedy decoding has clear winners), and the MoEs
`upcycle convert` makes (btx, 3 experts top-2, random routers): a Mixtral from three llamas, a
Qwen3-MoE from three qwen3s, and a Qwen2-MoE from three qwen2s (its shared expert their mean FFN,
top-k weights not renormalised: the routing llama.cpp computes for qwen2moe).

1. gguf.GGUFReader reads every file (f32, f16, bf16, q8_0); each tensor equals the folder's
   tensor as llama.cpp's converter lays it out, computed here with numpy: q/k rows interleaved
   for the llama architecture, experts stacked per layer, f16 and bf16 rounded to nearest even,
   and Q8_0 as gguf.quants.quantize makes it, byte for byte; Llama 3's rope_freqs as llama.cpp's
   converter computes them. Keys have the types llama.cpp's loader asks for.
2. With llama-cpp-python (pip builds llama.cpp from source), llama.cpp loads each f32 file: its
   logits (keys and values cached in f32) equal `upcycle forward`'s within 1e-4 relative, and
   greedy decoding of 32 tokens gives `upcycle generate --json`'s tokens.

Exits 77 (skipped) without numpy, safetensors and gguf; part 2 is skipped, with a message,
without llama_cpp.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import gguf
    from gguf.quants import quantize
    from safetensors.numpy import load_file
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

try:
    import llama_cpp
except ImportError:
    llama_cpp = None

BINARY = os.environ.get("UPCYCLE_BINARY")
if not BINARY:
    sys.exit("UPCYCLE_BINARY is not set (ctest sets it to the built upcycle)")

PROMPT = "The quick brown fox"
NEW_TOKENS = 32


def run(*args):
    done = subprocess.run([BINARY, *args], capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"upcycle {' '.join(map(str, args))} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def fail(message):
    sys.exit("FAIL: " + message)


# --- the expected layout ---------------------------------------------------------------------

def interleave(w, heads):
    """llama.cpp's converter's q/k permutation (LlamaModel.permute)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


DENSE = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "block_sparse_moe.gate.weight": "ffn_gate_inp.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
    "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
}
EXPERT = {"w1": "ffn_gate_exps.weight", "w3": "ffn_up_exps.weight", "w2": "ffn_down_exps.weight",
          "gate_proj": "ffn_gate_exps.weight", "up_proj": "ffn_up_exps.weight", "down_proj": "ffn_down_exps.weight"}


def expected_tensors(folder, interleave_qk):
    """GGUF name -> f32 array, from the folder's safetensors."""
    config = json.load(open(os.path.join(folder, "config.json")))
    src = load_file(os.path.join(folder, "model.safetensors"))
    out, experts = {}, {}
    for name, w in src.items():
        w = w.astype(np.float32)
        if name in DENSE:
            out[DENSE[name]] = w
            continue
        parts = name.split(".")
        layer, rest = int(parts[2]), ".".join(parts[3:])
        if rest.startswith("block_sparse_moe.experts.") or rest.startswith("mlp.experts."):
            e, kind = int(parts[5]), parts[6]
            experts.setdefault((layer, EXPERT[kind]), {})[e] = w
            continue
        if interleave_qk and rest.startswith("self_attn.q_proj"):
            w = interleave(w, config["num_attention_heads"])
        if interleave_qk and rest.startswith("self_attn.k_proj"):
            w = interleave(w, config["num_key_value_heads"])
        out[f"blk.{layer}.{LAYER[rest]}"] = w
    for (layer, gname), by_expert in experts.items():
        out[f"blk.{layer}.{gname}"] = np.stack([by_expert[e] for e in sorted(by_expert)])
    if config["model_type"] == "qwen2_moe" and "output.weight" not in out:
        out["output.weight"] = out["token_embd.weight"]  # llama.cpp's qwen2moe has no tied head
    scaling = config.get("rope_scaling") or {}
    if scaling.get("rope_type") == "llama3":
        out["rope_freqs.weight"] = llama3_divisors(config, scaling)
    return out


def llama3_divisors(config, s):
    """llama.cpp's converter's rope_freqs (LlamaModel.generate_extra_tensors)."""
    dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    freqs = 1.0 / (config["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    low_wavelen = s["original_max_position_embeddings"] / s["low_freq_factor"]
    high_wavelen = s["original_max_position_embeddings"] / s["high_freq_factor"]
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1)
        elif wavelen > low_wavelen:
            factors.append(s["factor"])
        else:
            smooth = (s["original_max_position_embeddings"] / wavelen - s["low_freq_factor"]) / (
                s["high_freq_factor"] - s["low_freq_factor"])
            factors.append(1 / ((1 - smooth) / s["factor"] + smooth))
    return np.array(factors, dtype=np.float32)


def bf16_bits(x):
    """f32 to bf16 bits, round to nearest even (finite values)."""
    bits = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def stored_bytes(w, dtype, name):
    """The bytes a GGUF tensor of this dtype holds for w."""
    keep_f32 = w.ndim < 2 or name.endswith("ffn_gate_inp.weight") or name.endswith("ffn_gate_inp_shexp.weight")
    if keep_f32 or dtype == "f32":
        return w.astype(np.float32).tobytes(), gguf.GGMLQuantizationType.F32
    if dtype == "f16":
        return w.astype(np.float16).tobytes(), gguf.GGMLQuantizationType.F16
    if dtype == "bf16":
        return bf16_bits(w).tobytes(), gguf.GGMLQuantizationType.BF16
    q8 = gguf.GGMLQuantizationType.Q8_0
    return quantize(w, q8).tobytes(), q8


U32 = gguf.GGUFValueType.UINT32
F32 = gguf.GGUFValueType.FLOAT32
KEY_TYPES = {
    "{a}.block_count": U32, "{a}.context_length": U32, "{a}.embedding_length": U32,
    "{a}.feed_forward_length": U32, "{a}.attention.head_count": U32, "{a}.attention.head_count_kv": U32,
    "{a}.attention.layer_norm_rms_epsilon": F32, "{a}.rope.freq_base": F32,
    "tokenizer.ggml.eos_token_id": U32,
}


def check_gguf(path, folder, arch, dtype):
    reader = gguf.GGUFReader(path)
    config = json.load(open(os.path.join(folder, "config.json")))
    got_arch = reader.fields["general.architecture"].contents()
    if got_arch != arch:
        fail(f"{path}: general.architecture {got_arch}, expected {arch}")
    for key, vtype in KEY_TYPES.items():
        key = key.format(a=arch)
        field = reader.fields.get(key)
        if field is None or field.types[0] != vtype:
            fail(f"{path}: key {key} is {field.types if field else 'missing'}, expected {vtype.name}")
    experts = config.get("num_local_experts", config.get("num_experts"))
    if experts and reader.fields[f"{arch}.expert_count"].contents() != experts:
        fail(f"{path}: expert_count differs from the config's")
    if len(reader.fields["tokenizer.ggml.tokens"].contents()) != config["vocab_size"]:
        fail(f"{path}: the token list is not vocab_size long")
    expected = expected_tensors(folder, interleave_qk=arch == "llama")
    tensors = {t.name: t for t in reader.tensors}
    if sorted(tensors) != sorted(expected):
        fail(f"{path}: tensors {sorted(set(tensors) ^ set(expected))} are in one of the file and the folder only")
    for name, w in expected.items():
        t = tensors[name]
        want, qtype = stored_bytes(w, dtype, name)
        got = np.asarray(t.data).tobytes()
        if name == "rope_freqs.weight":  # the converter computes them in torch's fp32, we in double
            err = np.abs(np.asarray(t.data) - w).max() / w.max()
            if not err < 1e-6:
                fail(f"{path}: rope_freqs differ from the converter's by {err:.1e} (relative)")
            continue
        if t.tensor_type != qtype or list(reversed([int(d) for d in t.shape])) != list(w.shape) or got != want:
            fail(f"{path}: tensor {name} ({t.tensor_type.name}, {list(t.shape)}) is not the folder's "
                 f"{list(w.shape)} as {qtype.name}")
    print(f"{os.path.basename(path)}: {len(expected)} tensors as llama.cpp lays them out, keys typed")


# --- llama.cpp -------------------------------------------------------------------------------

def our_logits(folder, tokens, tmp):
    out = os.path.join(tmp, "logits.bin")
    run("forward", "--model", folder, "--tokens", ",".join(map(str, tokens)), "--out", out, "--overwrite")
    return np.fromfile(out, dtype=np.float32).reshape(len(tokens), -1)


def check_llama_cpp(path, folder, tmp):
    llm = llama_cpp.Llama(model_path=path, n_ctx=128, logits_all=True, verbose=False, n_threads=2,
                          type_k=0, type_v=0)  # keys and values in f32 (GGML_TYPE_F32), as ours
    ours_gen = json.loads(run("generate", "--model", folder, "--prompt", PROMPT, "--max-new-tokens",
                              str(NEW_TOKENS), "--json"))
    prompt = [int(t) for t in run("tokenize", "--tokenizer", folder, "--text", PROMPT).split()]
    theirs_prompt = llm.tokenize(PROMPT.encode(), add_bos=False, special=False)
    if theirs_prompt != prompt:
        fail(f"{path}: llama.cpp tokenizes the prompt as {theirs_prompt}, we as {prompt}")
    llm.eval(prompt)
    theirs = np.array(llm.scores[: len(prompt)], dtype=np.float32)
    ours = our_logits(folder, prompt, tmp)
    err = np.abs(ours - theirs).max() / np.abs(ours).max()
    if not err < 1e-4:
        fail(f"{path}: llama.cpp's logits differ from ours by {err:.2e} (relative)")
    # Greedy: llama.cpp's argmax, one token at a time, until ours stopped.
    eos = llm.token_eos()
    generated = []
    while len(generated) < len(ours_gen["ids"]):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        generated.append(token)
        if token == eos:
            break
        llm.eval([token])
    if generated != ours_gen["ids"]:
        fail(f"{path}: llama.cpp decodes {generated}, we {ours_gen['ids']}")
    print(f"{os.path.basename(path)}: llama.cpp's logits within {err:.1e} of ours, the same "
          f"{len(generated)} greedy tokens")


# ---------------------------------------------------------------------------------------------

def init(tmp, name, seed, config=None):
    path = os.path.join(tmp, name)
    shape = ["--config", config] if config else ["--preset", "demo"]
    run("init", *shape, "--tokenizer", "bytes", "--std", "0.5", "--seed", str(seed), "--out", path, "-q")
    return path


def main():
    with tempfile.TemporaryDirectory() as tmp:
        llamas = [init(tmp, f"llama{s}", s) for s in (1, 2, 3)]
        demo = json.load(open(os.path.join(llamas[0], "config.json")))
        demo.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"], tie_word_embeddings=True)
        demo.pop("attention_bias", None)
        qwen_config = os.path.join(tmp, "qwen2.json")
        json.dump(demo, open(qwen_config, "w"))
        qwens = [init(tmp, f"qwen2_{s}", s, qwen_config) for s in (4, 10, 11)]
        qwen = qwens[0]
        demo.update(model_type="qwen3", architectures=["Qwen3ForCausalLM"], head_dim=48, attention_bias=False)
        json.dump(demo, open(qwen_config, "w"))
        qwen3s = [init(tmp, f"qwen3_{s}", s, qwen_config) for s in (7, 8, 9)]
        qwen3 = qwen3s[0]
        demo.pop("head_dim")
        demo.update(model_type="qwen2_moe", architectures=["Qwen2MoeForCausalLM"], num_experts=4,
                    num_experts_per_tok=2, moe_intermediate_size=64, shared_expert_intermediate_size=96,
                    norm_topk_prob=False, tie_word_embeddings=False)
        json.dump(demo, open(qwen_config, "w"))
        qwen_moe = init(tmp, "qwen2_moe", 5, qwen_config)
        llama3 = json.load(open(os.path.join(llamas[0], "config.json")))
        llama3.update(hidden_size=256, rope_theta=500000.0, rope_scaling={
            "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192})  # head_dim 64: some frequencies blended
        llama3_config = os.path.join(tmp, "llama3_rope.json")
        json.dump(llama3, open(llama3_config, "w"))
        llama3 = init(tmp, "llama3_rope", 6, llama3_config)
        mixtral = os.path.join(tmp, "mixtral")
        run("convert", "--checkpoints", *llamas, "--method", "btx", "--experts", "3", "--top-k", "2",
            "--router", "random", "--seed", "1", "--out", mixtral)
        qwen3_moe = os.path.join(tmp, "qwen3_moe")
        run("convert", "--checkpoints", *qwen3s, "--method", "btx", "--experts", "3", "--top-k", "2",
            "--router", "random", "--seed", "1", "--out", qwen3_moe)
        qwen2_moe = os.path.join(tmp, "qwen2_moe_made")
        run("convert", "--checkpoints", *qwens, "--method", "btx", "--experts", "3", "--top-k", "2",
            "--router", "random", "--shared-expert", "mean", "--unnormalised-topk", "--seed", "1", "--out", qwen2_moe)
        models = [(llamas[0], "llama"), (llama3, "llama"), (qwen, "qwen2"), (qwen3, "qwen3"), (mixtral, "llama"),
                  (qwen3_moe, "qwen3moe"), (qwen_moe, "qwen2moe"), (qwen2_moe, "qwen2moe")]
        for folder, arch in models:
            for dtype in ("f32", "f16", "bf16", "q8_0"):
                path = f"{folder}.{dtype}.gguf"
                run("export", folder, path, "--dtype", dtype, "-q")
                check_gguf(path, folder, arch, dtype)
        if llama_cpp is None:
            print("llama.cpp part skipped: no llama_cpp module (pip install llama-cpp-python)")
            return
        for folder, _ in models:
            check_llama_cpp(f"{folder}.f32.gguf", folder, tmp)


if __name__ == "__main__":
    main()

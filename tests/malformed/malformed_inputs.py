#!/usr/bin/env python3
"""The malformed-input suite: writes a corpus of bad inputs (configs, safetensors, sharded
indexes, GGUF, HDF5, tokenizer files, instruction data, resume states, run configs, option
misuse) next to good ones made by the binary itself, runs `upcycle` on every case, and checks
that each ends as a user's mistake should: exit 1 (usage) or 2 (bad input) as the case says,
never a signal or a timeout, a message naming the file or option at fault, and nothing left at
the output path. Prints a histogram of exit codes and every case that failed.

    python3 tests/malformed/malformed_inputs.py [--upcycle build/upcycle/upcycle] [--keep DIR]

UPCYCLE_BINARY also names the binary (ctest sets it). HDF5 cases need h5py; without it they
are left out and said so.
"""
import argparse
import collections
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

USAGE, BAD_INPUT = 1, 2
TIMEOUT_S = 60


@dataclass
class Case:
    name: str
    args: list            # the command line after `upcycle`
    code: int             # the exit code it must end with
    names: str            # what the message must name (a file, a flag, a key)
    absent: list = field(default_factory=list)  # paths that must not exist afterwards
    file_limit: int = 0   # > 0: files may grow to this many bytes (a full disk, without a mount)


class Corpus:
    """The good inputs, made once by the binary, and the cases built from them."""

    def __init__(self, upcycle, root):
        self.upcycle, self.root = upcycle, Path(root)
        self.cases = []
        self.n = 0

    def run(self, *args):
        r = subprocess.run([self.upcycle, *map(str, args)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            sys.exit(f"setup failed: upcycle {' '.join(map(str, args))}\n{r.stderr}")

    def fresh(self, stem, suffix=""):
        """A new path under the corpus for one case's input or output."""
        self.n += 1
        return self.root / f"{self.n:03d}-{stem}{suffix}"

    def add(self, name, args, code, names, absent=(), file_limit=0):
        self.cases.append(Case(name, [str(a) for a in args], code, str(names), [str(p) for p in absent], file_limit))

    def folder_copy(self, stem, base):
        path = self.fresh(stem)
        shutil.copytree(base, path)
        return path

    def make_good(self):
        r = self.root
        self.run("init", "--preset", "demo", "--tokenizer", "bytes", "--out", r / "model")
        self.run("export", r / "model", r / "model.h5")
        self.run("export", r / "model", r / "sharded", "--shard-size", "400KB")
        self.run("data", "synth", "--n", "24", "--out", r / "data.jsonl")
        self.run("tune", "--model", r / "model", "--data", r / "data.jsonl", "--out", r / "run", "--steps", "3",
                 "--stop-at", "2", "--batch-tokens", "512", "--seq-len", "256")
        self.model, self.data, self.state = r / "model", r / "data.jsonl", r / "run" / "step-000002"
        self.config = json.loads((self.model / "config.json").read_text())


# --- config.json --------------------------------------------------------------------------------

def config_cases(c):
    bad_values = {"minus one": -1, "zero": 0, "a string": "7", "absurd": 10**15, "a boolean": True}
    fields = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta"]
    edits = [(f"{f} {label}", {f: v}) for f in fields for label, v in bad_values.items()]
    edits += [
        ("hidden_act gelu", {"hidden_act": "gelu"}),
        ("rope_scaling of an unknown type", {"rope_scaling": {"type": "weird", "factor": 2.0}}),
        ("rope_scaling factor negative", {"rope_scaling": {"type": "linear", "factor": -3}}),
        ("rope_scaling yarn", {"rope_scaling": {"type": "yarn", "factor": 4.0}}),
        ("mlp_bias", {"mlp_bias": True}),
        ("model_type bert", {"model_type": "bert"}),
        ("fewer layers than the weights", {"num_hidden_layers": 3}),
        ("a tied head the weights do not have", {"tie_word_embeddings": False}),
        ("head_dim odd", {"head_dim": 7}),
        ("kv heads not dividing heads", {"num_key_value_heads": 3}),
    ]
    for name, edit in edits:
        folder = c.folder_copy("config", c.model)
        cfg = dict(c.config, **edit)
        (folder / "config.json").write_text(json.dumps(cfg))
        c.add(f"config: {name} (inspect)", ["inspect", folder], BAD_INPUT, folder / "config.json" if "weights" not in name else folder)
    for name, text in [("not JSON", "{\"vocab_size\": 258,"), ("a list", "[1, 2]"), ("empty", ""),
                       ("no hidden_size", json.dumps({k: v for k, v in c.config.items() if k != "hidden_size"}))]:
        folder = c.folder_copy("config", c.model)
        (folder / "config.json").write_text(text)
        out = c.fresh("out")
        c.add(f"config: {name} (inspect)", ["inspect", folder], BAD_INPUT, folder / "config.json")
        c.add(f"config: {name} (convert)", ["convert", "--checkpoints", folder, "--method", "sparse", "--experts", "2",
                                            "--out", out], BAD_INPUT, folder / "config.json", [out])
        c.add(f"config: {name} (tune)", ["tune", "--model", folder, "--data", c.data, "--out", c.fresh("run"),
                                         "--steps", "1"], BAD_INPUT, folder / "config.json")


# --- safetensors and sharded indexes ------------------------------------------------------------

def safetensors_cases(c):
    weights = (c.model / "model.safetensors").read_bytes()
    header_len = struct.unpack("<Q", weights[:8])[0]
    header = json.loads(weights[8:8 + header_len])
    body = weights[8 + header_len:]
    first = next(k for k in header if k != "__metadata__")

    def with_header(h):
        text = json.dumps(h).encode()
        return struct.pack("<Q", len(text)) + text + body

    variants = [(f"truncated to {n} bytes", weights[:n]) for n in (0, 4, 8, 20, 8 + header_len // 2,
                                                                    8 + header_len + len(body) // 2, len(weights) - 1)]
    variants += [
        ("header length past the end", struct.pack("<Q", 2**40) + weights[8:]),
        ("header not JSON", struct.pack("<Q", 5) + b"{nope" + body),
        ("header a list", with_header([1, 2])),
        ("unknown dtype", with_header({**header, first: {**header[first], "dtype": "Q9"}})),
        ("offsets reversed", with_header({**header, first: {**header[first], "data_offsets": header[first]["data_offsets"][::-1]}})),
        ("offsets past the data", with_header({**header, first: {**header[first], "data_offsets": [0, len(body) + 64]}})),
        ("negative shape", with_header({**header, first: {**header[first], "shape": [-1, 4]}})),
        ("shape not matching its bytes", with_header({**header, first: {**header[first], "shape": [3]}})),
        ("metadata not an object", with_header({**header, "__metadata__": [1]})),
        ("a tensor missing", with_header({k: v for k, v in header.items() if k != first})),
    ]
    for name, data in variants:
        folder = c.folder_copy("safetensors", c.model)
        (folder / "model.safetensors").write_bytes(data)
        out = c.fresh("out.h5")
        c.add(f"safetensors: {name} (inspect)", ["inspect", folder], BAD_INPUT, folder)
        c.add(f"safetensors: {name} (export)", ["export", folder, out], BAD_INPUT, folder, [out])

    index_name = "model.safetensors.index.json"
    index = json.loads((c.root / "sharded" / index_name).read_text())
    shards = sorted(set(index["weight_map"].values()))
    a_tensor = next(iter(index["weight_map"]))
    edits = [
        ("index not JSON", lambda f: (f / index_name).write_text("{\"weight_map\":")),
        ("index without weight_map", lambda f: (f / index_name).write_text(json.dumps({"metadata": {}}))),
        ("a shard missing", lambda f: (f / shards[-1]).unlink()),
        ("a shard outside the folder", lambda f: (f / index_name).write_text(json.dumps(
            {"weight_map": {**index["weight_map"], a_tensor: "../model.safetensors"}}))),
        ("a tensor in another shard than listed", lambda f: (f / index_name).write_text(json.dumps(
            {"weight_map": {**index["weight_map"], a_tensor: shards[-1] if index["weight_map"][a_tensor] != shards[-1] else shards[0]}}))),
        ("a listed tensor absent", lambda f: (f / index_name).write_text(json.dumps(
            {"weight_map": {**index["weight_map"], "model.extra.weight": shards[0]}}))),
    ]
    for name, edit in edits:
        folder = c.folder_copy("sharded", c.root / "sharded")
        edit(folder)
        c.add(f"sharded: {name} (inspect)", ["inspect", folder], BAD_INPUT, folder)


# --- GGUF ---------------------------------------------------------------------------------------

def gguf_cases(c, source):
    good = (source / "tests" / "fuzz" / "corpus" / "gguf" / "tiny_llama.gguf").read_bytes()

    def patch(offset, fmt, value):
        b = bytearray(good)
        struct.pack_into(fmt, b, offset, value)
        return bytes(b)

    variants = [(f"truncated to {n} bytes", good[:n]) for n in (0, 3, 8, 16, 24, 100, len(good) // 2, len(good) - 1)]
    variants += [
        ("bad magic", b"GGUX" + good[4:]),
        ("version 99", patch(4, "<I", 99)),
        ("tensor count absurd", patch(8, "<Q", 2**62)),
        ("key count absurd", patch(16, "<Q", 2**62)),
        ("first key length absurd", patch(24, "<Q", 2**62)),
        ("first key length zero", patch(24, "<Q", 0)),
    ]
    for name, data in variants:
        path = c.fresh("model", ".gguf")
        path.write_bytes(data)
        out = c.fresh("out")
        c.add(f"gguf: {name} (inspect)", ["inspect", path], BAD_INPUT, path)
        c.add(f"gguf: {name} (export)", ["export", path, out], BAD_INPUT, path, [out])


# --- HDF5 ---------------------------------------------------------------------------------------

def hdf5_cases(c):
    good = (c.root / "model.h5").read_bytes()
    for n in (0, 8, 512, len(good) // 2, len(good) - 1):
        path = c.fresh("model", ".h5")
        path.write_bytes(good[:n])
        c.add(f"hdf5: truncated to {n} bytes (inspect)", ["inspect", path], BAD_INPUT, path)
    try:
        import h5py
        import numpy as np
    except ImportError:
        print("malformed: h5py or numpy missing: the HDF5 files h5py writes are left out")
        return
    with h5py.File(c.root / "model.h5", "r") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
    one = names[0]

    def rewrite(edit):
        path = c.fresh("model", ".h5")
        shutil.copyfile(c.root / "model.h5", path)
        with h5py.File(path, "r+") as f:
            edit(f)
        return path

    def replace(f, data):
        del f[one]
        f.create_dataset(one, data=data)

    edits = [
        ("a tensor of int8", lambda f: replace(f, np.zeros(f[one].shape, dtype=np.int8))),
        ("a tensor of another shape", lambda f: replace(f, np.zeros((3,), dtype=np.float32))),
        ("a tensor missing", lambda f: f.__delitem__(one)),
    ]
    # "format" and "format_version" may be absent (files made by hand), but not wrong.
    edits += [
        ("config attribute removed", lambda f: f.attrs.__delitem__("config")),
        ("config attribute not JSON", lambda f: f.attrs.__setitem__("config", "{nope")),
        ("config attribute a number", lambda f: f.attrs.__setitem__("config", 5)),
        ("another format", lambda f: f.attrs.__setitem__("format", "other")),
        ("format_version 99", lambda f: f.attrs.__setitem__("format_version", 99)),
    ]
    for name, edit in edits:
        path = rewrite(edit)
        c.add(f"hdf5: {name} (inspect)", ["inspect", path], BAD_INPUT, path)


# --- tokenizer files ----------------------------------------------------------------------------

def tokenizer_cases(c):
    tok = json.loads((c.model / "tokenizer.json").read_text())
    model = tok["model"]
    variants = [
        ("not JSON", "{\"model\":"), ("a list", "[]"), ("empty", ""),
        ("model Unigram", json.dumps({**tok, "model": {**model, "type": "Unigram"}})),
        ("vocab a list", json.dumps({**tok, "model": {**model, "vocab": [1, 2]}})),
        ("a negative id", json.dumps({**tok, "model": {**model, "vocab": {**model["vocab"], "zz": -4}}})),
        ("a merge of unknown tokens", json.dumps({**tok, "model": {**model, "merges": ["qq zz"]}})),
        ("an added token id absurd", json.dumps({**tok, "added_tokens": [{"id": 2**40, "content": "<x>", "special": True}]})),
        ("an unknown pre-tokenizer", json.dumps({**tok, "pre_tokenizer": {"type": "Whitespace"}})),
        ("an unknown normalizer", json.dumps({**tok, "normalizer": {"type": "Lowercase"}})),
    ]
    for name, text in variants:
        folder = c.folder_copy("tokenizer", c.model)
        (folder / "tokenizer.json").write_text(text)
        c.add(f"tokenizer.json: {name} (tokenize)", ["tokenize", "--tokenizer", folder / "tokenizer.json", "--text", "hi"],
              BAD_INPUT, folder / "tokenizer.json")
        c.add(f"tokenizer.json: {name} (tune)", ["tune", "--model", folder, "--data", c.data, "--out", c.fresh("run"),
                                                 "--steps", "1"], BAD_INPUT, folder / "tokenizer.json")
    for name, text in [("not JSON", "{"), ("eos_token a number", json.dumps({"eos_token": 5}))]:
        folder = c.folder_copy("tokenizer", c.model)
        (folder / "tokenizer_config.json").write_text(text)
        c.add(f"tokenizer_config.json: {name} (tokenize)", ["tokenize", "--tokenizer", folder, "--text", "hi"],
              BAD_INPUT, folder / "tokenizer_config.json")
    path = c.fresh("tokenizer", ".model")
    path.write_bytes(b"\x0a\xff\xff\xff\xff\x0fgarbage")
    c.add("tokenizer.model: garbage (tokenize)", ["tokenize", "--tokenizer", path, "--text", "hi"], BAD_INPUT, path)


# --- instruction data ---------------------------------------------------------------------------

def data_cases(c):
    good = c.data.read_text().splitlines()[0]
    lines = {
        "not JSON": "{\"instruction\": ",
        "a list": "[1, 2]",
        "a number": "5",
        "an empty object": "{}",
        "instruction not text": "{\"instruction\": 5, \"output\": \"x\"}",
        "no output": "{\"instruction\": \"x\"}",
        "messages not a list": "{\"messages\": \"x\"}",
        "messages empty": "{\"messages\": []}",
        "an unknown role": "{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}",
        "a message without content": "{\"messages\": [{\"role\": \"user\"}]}",
        "no assistant reply": "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
        "input_ids not a list": "{\"input_ids\": \"x\"}",
        "labels of another length": "{\"input_ids\": [1, 2], \"labels\": [1]}",
        "an id outside the vocabulary": "{\"input_ids\": [1, 99999]}",
        "a negative id": "{\"input_ids\": [-5, 3]}",
        "a fractional id": "{\"input_ids\": [1.5, 2]}",
        "longer than the context": json.dumps({"input_ids": [1] * 300}),
        "invalid UTF-8": b"{\"instruction\": \"\xff\xfe\", \"output\": \"x\"}",
    }
    files = {f"a line {k}": (good + "\n").encode() + (v if isinstance(v, bytes) else v.encode()) + b"\n"
             for k, v in lines.items()}
    files["empty file"] = b""
    files["only blank lines"] = b"\n\n  \n"
    files["no counted token"] = b"{\"input_ids\": [1, 2, 3], \"labels\": [-100, -100, -100]}\n"
    for name, data in files.items():
        path = c.fresh("data", ".jsonl")
        path.write_bytes(data)
        run = c.fresh("run")
        c.add(f"data: {name} (tune)", ["tune", "--model", c.model, "--data", path, "--out", run, "--steps", "1"],
              BAD_INPUT, path, [run / "final"])
        c.add(f"data: {name} (eval)", ["eval", "--model", c.model, "--data", path, "--metric", "loss"], BAD_INPUT, path)
    missing = c.fresh("missing", ".jsonl")
    c.add("data: a missing file (tune)", ["tune", "--model", c.model, "--data", missing, "--out", c.fresh("run"),
                                          "--steps", "1"], BAD_INPUT, missing)


# --- resume states ------------------------------------------------------------------------------

def resume_cases(c):
    state = json.loads((c.state / "trainer_state.json").read_text())
    edits = [
        ("trainer_state not JSON", lambda f: (f / "trainer_state.json").write_text("{"), "trainer_state.json"),
        ("trainer_state without step", lambda f: (f / "trainer_state.json").write_text(
            json.dumps({k: v for k, v in state.items() if k != "step"})), "trainer_state.json"),
        ("a negative step", lambda f: (f / "trainer_state.json").write_text(json.dumps({**state, "step": -3})),
         "trainer_state.json"),
        ("an epoch no run reaches", lambda f: (f / "trainer_state.json").write_text(
            json.dumps({**state, "epoch": 10**12})), "trainer_state.json"),
        ("a seed of text", lambda f: (f / "trainer_state.json").write_text(json.dumps({**state, "seed": "0"})),
         "trainer_state.json"),
        ("no trainer_state", lambda f: (f / "trainer_state.json").unlink(), "trainer_state.json"),
        ("no optimizer state", lambda f: (f / "optimizer.safetensors").unlink(), "optimizer.safetensors"),
        ("optimizer state truncated", lambda f: (f / "optimizer.safetensors").write_bytes(
            (f / "optimizer.safetensors").read_bytes()[:100]), "optimizer.safetensors"),
    ]
    for name, edit, file in edits:
        folder = c.fresh("step-000002")
        shutil.copytree(c.state, folder)
        edit(folder)
        c.add(f"resume: {name}", ["tune", "--resume", folder, "--data", c.data, "--out", c.root / "run",
                                  "--steps", "3", "--batch-tokens", "512", "--seq-len", "256"], BAD_INPUT, file,
              [c.root / "run" / "final"])


# --- run configs --------------------------------------------------------------------------------

def run_config_cases(c):
    good = {"out": str(c.fresh("pipeline")), "dense": {"model": str(c.model), "data": str(c.data), "steps": 2, "save_every": 1},
            "convert": {"experts": 2, "router": "random"}, "moe": {"steps": 2}}
    variants = [
        ("not JSON", "{\"out\":", BAD_INPUT),
        ("a list", "[]", BAD_INPUT),
        ("no out", json.dumps({k: v for k, v in good.items() if k != "out"}), BAD_INPUT),
        ("an unknown key", json.dumps({**good, "extra": 1}), BAD_INPUT),
        ("convert a number", json.dumps({**good, "convert": 5}), BAD_INPUT),
        ("an unknown stage option", json.dumps({**good, "moe": {"steps": 2, "stpes": 3}}), USAGE),
        ("a stage option of the wrong type", json.dumps({**good, "moe": {"steps": "2"}}), USAGE),
        ("moe naming its model", json.dumps({**good, "moe": {"steps": 2, "model": "x"}}), USAGE),
        ("an eval metric unknown", json.dumps({**good, "eval": [{"data": str(c.data), "metric": "bogus"}]}), USAGE),
        ("eval not a list", json.dumps({**good, "eval": 3}), BAD_INPUT),
        ("a stage's seq_len past the model's context", json.dumps({**good, "moe": {"steps": 2, "seq_len": 99999}}), USAGE),
        ("top_k above experts", json.dumps({**good, "convert": {"experts": 2, "top_k": 3, "router": "random"}}), USAGE),
    ]
    for name, text, code in variants:
        path = c.fresh("run", ".json")
        path.write_text(text)
        c.add(f"run config: {name}", ["run", "--config", path], code, path.name, [Path(good["out"]) / "dense"])


# --- outputs that do not fit -------------------------------------------------------------------

def full_disk_cases(c):
    """Writers that run out of room: RLIMIT_FSIZE makes writes past a size fail (EFBIG) as a full
    disk fails them (ENOSPC). libhdf5 once crashed at exit after such a failure (issue 25)."""
    for limit in (4096, 200_000):
        for name, make in [
            ("init to HDF5", lambda out: ["init", "--preset", "demo", "--out", out]),
            ("init to a folder", lambda out: ["init", "--preset", "demo", "--out", out]),
            ("export to HDF5", lambda out: ["export", c.model, out]),
            ("export to a folder", lambda out: ["export", c.model, out]),
            ("export to GGUF", lambda out: ["export", c.model, out]),
            ("convert to HDF5", lambda out: ["convert", "--checkpoints", c.model, "--method", "sparse", "--experts", "2",
                                              "--out", out]),
            ("convert to a folder", lambda out: ["convert", "--checkpoints", c.model, "--method", "sparse",
                                                 "--experts", "2", "--out", out]),
        ]:
            out = c.fresh("full", ".h5" if "HDF5" in name else ".gguf" if "GGUF" in name else "")
            c.add(f"full disk at {limit} bytes: {name}", make(out), BAD_INPUT, out, [out], file_limit=limit)


# --- option misuse ------------------------------------------------------------------------------

def option_cases(c):
    m, d = str(c.model), str(c.data)
    for command in ["inspect", "export", "tokenize", "init", "forward", "bench", "tune", "convert", "run", "eval",
                    "generate", "demo", "sweep"]:
        c.add(f"options: {command} --bogus", [command, "--bogus", "1"], USAGE, "bogus")
    c.add("options: data synth --bogus", ["data", "synth", "--bogus"], USAGE, "bogus")
    gguf_out, folder_out = c.fresh("q4", ".gguf"), c.fresh("q8", "")
    c.add("options: export to GGUF in a dtype it has no writer for", ["export", m, gguf_out, "--dtype", "q4_k"], USAGE,
          "q8_0", [gguf_out])
    c.add("options: export q8_0 to a folder", ["export", m, folder_out, "--dtype", "q8_0"], USAGE, "GGUF", [folder_out])
    tune = ["tune", "--model", m, "--data", d, "--out", "never"]
    for flag, value in [("--steps", "-1"), ("--lr", "-1"), ("--lr", "x"), ("--batch-tokens", "0"), ("--grad-accum", "0"),
                        ("--seq-len", "1"), ("--seq-len", "99999"), ("--val-fraction", "2"), ("--beta1", "1"),
                        ("--schedule", "foo"), ("--save-dtype", "q4"), ("--freeze", "bogus"), ("--aux-loss", "foo"),
                        ("--balance", "foo"), ("--device", "tpu"), ("--clip", "-1"), ("--stop-at", "-1"),
                        ("--warmup", "-1"), ("--epochs", "-2"), ("--save-every", "-1"), ("--lora-rank", "-1"),
                        ("--lora-rank", "5000"), ("--lora-alpha", "-1"), ("--lora-dropout", "1"),
                        ("--lora-targets", "qkv"), ("--lora-targets", "q_proj,q_proj"), ("--lora-experts", "-1"),
                        ("--lora-experts", "300"), ("--lora-top-k", "2"), ("--timeout", "0")]:
        args = tune + (["--steps", "2"] if flag != "--steps" else []) + [flag, value]
        c.add(f"options: tune {flag} {value}", args, USAGE, flag, [Path("never")])
    c.add("options: tune --stop-at past the run", tune + ["--steps", "2", "--stop-at", "5"], USAGE, "--stop-at",
          [Path("never")])
    c.add("options: tune --epochs 1e12", tune + ["--epochs", "1e12"], USAGE, "--epochs", [Path("never")])
    c.add("options: tune --steps 2e9", tune + ["--steps", "2000000000"], USAGE, "--steps", [Path("never")])
    c.add("options: tune without --data", ["tune", "--model", m, "--out", "never", "--steps", "1"], USAGE, "--data")
    conv = ["convert", "--checkpoints", m, m, "--data", d, "--out", "never"]
    for flag, value in [("--experts", "0"), ("--experts", "999"), ("--method", "foo"), ("--merge", "foo"),
                        ("--drop-rate", "1"), ("--density", "0"), ("--search-sample", "-1"), ("--router", "foo"),
                        ("--seed-assign", "foo"), ("--parents", "foo"), ("--distance", "foo"), ("--fitness", "foo"),
                        ("--candidates", "0"), ("--precision", "fp8")]:
        c.add(f"options: convert {flag} {value}", conv + [flag, value], USAGE, flag)
    c.add("options: convert --top-k above --experts", conv + ["--experts", "2", "--top-k", "3"], USAGE, "--top-k")
    c.add("options: convert upit from one checkpoint", ["convert", "--checkpoints", m, "--data", d, "--experts", "4",
                                                         "--out", "never"], USAGE, "--checkpoints", [Path("never")])
    c.add("options: convert without --out", ["convert", "--checkpoints", m], USAGE, "--out")
    ev = ["eval", "--model", m, "--data", d]
    for flag, value in [("--metric", "foo"), ("--batch-tokens", "0"), ("--max-new-tokens", "0"), ("--seq-len", "99999"),
                        ("--precision", "fp8")]:
        c.add(f"options: eval {flag} {value}", ev + [flag, value], USAGE, flag)
    c.add("options: forward --precision fp8", ["forward", "--model", m, "--tokens", "1", "--out", "never",
                                               "--precision", "fp8"], USAGE, "--precision", [Path("never")])
    fwd = ["forward", "--model", m, "--tokens", "1", "--out", "never", "--adapter"]
    empty = c.fresh("adapter-empty")
    empty.mkdir()
    c.add("adapter: a folder without adapter_config.json", fwd + [empty], BAD_INPUT, "adapter_config.json",
          [Path("never")])
    bad = c.fresh("adapter-bad-json")
    bad.mkdir()
    (bad / "adapter_config.json").write_text('{"peft_type": "LORA", "r": ')
    c.add("adapter: adapter_config.json of bad JSON", fwd + [bad], BAD_INPUT, "adapter_config.json", [Path("never")])
    pickle = c.fresh("adapter-pickle")
    pickle.mkdir()
    (pickle / "adapter_config.json").write_text(
        '{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}')
    (pickle / "adapter_model.bin").write_bytes(b"\x80\x04not unpickled")
    c.add("adapter: weights only as a pickle", fwd + [pickle], BAD_INPUT, "adapter_model.bin", [Path("never")])
    ia3 = c.fresh("adapter-ia3")
    ia3.mkdir()
    (ia3 / "adapter_config.json").write_text('{"peft_type": "IA3", "target_modules": ["k_proj"]}')
    c.add("adapter: a PEFT type other than LORA", fwd + [ia3], BAD_INPUT, "peft_type", [Path("never")])
    mixlora = '{"peft_type": "MIXLORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "up_proj"], ' \
              '"routing_strategy": "mixlora", "num_experts": 4, "top_k": 2'
    mixlora_cases = [("routing_strategy", ', "routing_strategy": "switch"}', "a MixLoRA routing other than mixlora"),
                     ("top_k", ', "top_k": 5}', "a MixLoRA top_k above num_experts"),
                     ("num_experts", ', "num_experts": 100000}', "a MixLoRA of 100000 experts"),
                     ("jitter_noise", ', "jitter_noise": 0.1}', "MixLoRA router jitter"),
                     ("adapter_model.safetensors", "}", "a MixLoRA without its tensors")]
    mixed = []
    for i, (field, tail, what) in enumerate(mixlora_cases):
        folder = c.fresh(f"adapter-mixlora-{i}")
        folder.mkdir()
        # A later key replaces an earlier one in nlohmann::json, as in Python's json.
        (folder / "adapter_config.json").write_text(mixlora + tail)
        c.add(f"adapter: {what}", fwd + [folder], BAD_INPUT, field, [Path("never")])
        mixed.append((folder, field, what))
    for folder, file, what in [(empty, "adapter_config.json", "a folder without adapter_config.json"),
                               (bad, "adapter_config.json", "adapter_config.json of bad JSON"),
                               (pickle, "adapter_model.bin", "weights only as a pickle"),
                               (ia3, "peft_type", "a PEFT type other than LORA")] + mixed[:2]:
        c.add(f"adapter: tune --adapter, {what}", tune + ["--steps", "2", "--adapter", folder], BAD_INPUT, file,
              [Path("never")])
        if folder != empty:  # without adapter_config.json a folder is read as a model
            c.add(f"adapter: inspect, {what}", ["inspect", folder], BAD_INPUT, file)
    moe = c.fresh("lora-moe")
    for folder, file, what in [(empty, "adapter_config.json", "a folder without adapter_config.json"),
                               (bad, "adapter_config.json", "adapter_config.json of bad JSON"),
                               (pickle, "adapter_model.bin", "weights only as a pickle"),
                               (ia3, "peft_type", "a PEFT type other than LORA")]:
        c.add(f"adapter: convert --adapters, {what}",
              ["convert", "--base", m, "--adapters", folder, folder, "--router", "random", "--out", moe], BAD_INPUT,
              file, [moe])
    for flag, value, name in [("--method", "drop", "--method"), ("--lora-child", "qr", "--lora-child"),
                              ("--fitness", "function", "--fitness"), ("--shared-merge", "ties", "--shared-merge")]:
        c.add(f"options: convert --adapters {flag} {value}",
              ["convert", "--base", m, "--adapters", empty, empty, "--data", d, "--out", moe, flag, value], USAGE, name,
              [moe])
    c.add("options: convert --adapters without --base", ["convert", "--adapters", empty, "--out", moe], USAGE, "--base",
          [moe])
    merged = c.fresh("merged")
    c.add("adapter: export --merge-adapter of a folder without adapter_config.json",
          ["export", m, merged, "--merge-adapter", empty], BAD_INPUT, "adapter_config.json", [merged])
    c.add("adapter: export --merge-adapter of a MixLoRA routing other than mixlora",
          ["export", m, merged, "--merge-adapter", mixed[0][0]], BAD_INPUT, "routing_strategy", [merged])
    c.add("options: bench --router-stage --router-shape foo", ["bench", "--router-stage", "--router-shape", "foo"], USAGE,
          "--router-shape")
    c.add("options: bench --router-stage --experts 1", ["bench", "--router-stage", "--experts", "1"], USAGE, "experts")
    c.add("options: tune --precision fp8", tune + ["--steps", "2", "--precision", "fp8"], USAGE,
          "--precision", [Path("never")])
    for flag, value in [("--temperature", "-1"), ("--top-p", "0"), ("--max-new-tokens", "-1"), ("--precision", "fp8")]:
        c.add(f"options: generate {flag} {value}", ["generate", "--model", m, "--prompt", "hi", flag, value], USAGE, flag)
    for cmd, flag, value in [("demo", "--experts", "0"), ("demo", "--repeats", "0"), ("demo", "--methods", "foo"),
                             ("sweep", "--data", "x"), ("sweep", "--experts", "0"), ("sweep", "--methods", "dense,,upit"),
                             ("demo", "--aux-loss-coef", "-1")]:
        c.add(f"options: {cmd} {flag} {value}", [cmd, "--out", "never", flag, value], USAGE, flag, [Path("never")])
    c.add("options: data synth --n -1", ["data", "synth", "--n", "-1", "--out", "never.jsonl"], USAGE, "--n")
    c.add("options: data synth --tasks foo", ["data", "synth", "--n", "2", "--tasks", "foo", "--out", "never.jsonl"],
          USAGE, "--tasks", [Path("never.jsonl")])
    c.add("options: init --preset foo", ["init", "--preset", "foo", "--out", "never"], USAGE, "--preset")
    c.add("options: init with --config and --preset", ["init", "--preset", "demo", "--config", "x", "--out", "never"],
          USAGE, "--config")
    c.add("options: export --shard-size 0", ["export", m, "never", "--shard-size", "0"], USAGE, "--shard-size")
    c.add("options: export --dtype q4", ["export", m, "never", "--dtype", "q4"], USAGE, "--dtype")


def limit_files(limit):
    """In the child before exec: files stop growing at `limit` bytes, and the write fails rather
    than the process being killed by SIGXFSZ."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def run_case(upcycle, case, cwd):
    start = time.monotonic()
    try:
        r = subprocess.run([upcycle, *case.args], capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S,
                           cwd=cwd, preexec_fn=limit_files(case.file_limit) if case.file_limit else None)
    except subprocess.TimeoutExpired:
        return "timeout", [f"no exit within {TIMEOUT_S} s"], time.monotonic() - start
    problems = []
    if r.returncode < 0:
        problems.append(f"killed by signal {-r.returncode}")
    elif r.returncode != case.code:
        problems.append(f"exit {r.returncode}, expected {case.code}")
    if case.names not in r.stderr:
        problems.append(f"message does not name {case.names!r}")
    for p in case.absent:
        path = Path(p) if Path(p).is_absolute() else Path(cwd) / p
        if path.exists():
            problems.append(f"{p} was left behind")
    if problems:
        problems.append("stderr: " + r.stderr.strip()[-400:])
    return r.returncode, problems, time.monotonic() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--upcycle", default=os.environ.get("UPCYCLE_BINARY", "build/upcycle/upcycle"))
    ap.add_argument("--keep", help="write the corpus here and keep it (default: a temporary folder)")
    args = ap.parse_args()
    source = Path(__file__).resolve().parents[2]
    upcycle = str(Path(args.upcycle).resolve())
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="upcycle-malformed-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        c = Corpus(upcycle, root)
        c.make_good()
        for make in (config_cases, safetensors_cases, hdf5_cases, tokenizer_cases, data_cases, resume_cases,
                     run_config_cases, full_disk_cases, option_cases):
            make(c)
        gguf_cases(c, source)
        work = root / "cwd"  # relative outputs land here
        work.mkdir(exist_ok=True)
        codes, failed, slowest = collections.Counter(), [], (0.0, "")
        for case in c.cases:
            code, problems, seconds = run_case(upcycle, case, work)
            codes[code] += 1
            slowest = max(slowest, (seconds, case.name))
            if problems:
                failed.append((case, problems))
        print(f"malformed inputs: {len(c.cases)} cases; exit codes: " +
              ", ".join(f"{k}: {v}" for k, v in sorted(codes.items(), key=lambda kv: str(kv[0]))) +
              f"; slowest {slowest[0]:.1f} s ({slowest[1]})")
        for case, problems in failed:
            print(f"FAIL {case.name}: upcycle {' '.join(case.args)}")
            for p in problems:
                print(f"    {p}")
        return 1 if failed else 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

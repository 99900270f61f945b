#!/usr/bin/env python3
"""Interop with PEFT: LoRA adapters that PEFT writes for a tiny Llama (random A and B, plain and
rsLoRA, attention and MLP modules) are applied by `upcycle forward --adapter`, whose logits must
equal PeftModel's, and merged by `upcycle export --merge-adapter`, whose tensors must equal
merge_and_unload()'s. The other way: `upcycle tune --adapter` trains PEFT's adapter two steps,
and PEFT trained the same way (torch's AdamW, eps 1 so that each update follows the gradient's
size, not only its sign) must reach the same A and B; PeftModel loads the folder tune wrote and
computes `upcycle forward --adapter`'s logits. Exits 77 (skipped) without torch, transformers and
peft, or without UPCYCLE_BINARY."""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import transformers
    import peft
except ImportError as e:
    print(f"skipped: {e}")
    sys.exit(77)

from tiny_llama import TOKENS, upcycle_binary, write_tiny_llama

BINARY = upcycle_binary()




def upcycle_logits(base, adapter, work):
    out = os.path.join(work, "logits.f32")
    r = subprocess.run([BINARY, "forward", "--model", base, "--adapter", adapter, "--tokens",
                        ",".join(map(str, TOKENS)), "--out", out, "--overwrite"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"upcycle forward --adapter {adapter} failed:\n{r.stderr}")
    return np.fromfile(out, dtype=np.float32).reshape(len(TOKENS), -1)


def check_merged(base, folder, adapted, work):
    """`upcycle export --merge-adapter` against PEFT's merge_and_unload(); the names that differ."""
    from safetensors.numpy import load_file
    out = os.path.join(work, "merged")
    r = subprocess.run([BINARY, "export", base, out, "--merge-adapter", folder, "--dtype", "f32", "--overwrite", "-q"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"upcycle export --merge-adapter failed:\n{r.stderr}")
    ours = load_file(os.path.join(out, "model.safetensors"))
    theirs = {k: v.float().numpy() for k, v in adapted.merge_and_unload().state_dict().items()}
    bad = [k for k, v in theirs.items() if k not in ours or np.abs(ours[k] - v).max() > 1e-6 * max(1.0, np.abs(v).max())]
    print(f"merged: {len(theirs)} tensors compared with merge_and_unload(), {len(bad)} differ")
    return bad


def check_trained(base, start, work):
    """Two AdamW steps of `upcycle tune --adapter start` against PEFT's; the failures."""
    import json
    from safetensors.numpy import load_file
    sample = TOKENS[:10]
    data = os.path.join(work, "train.jsonl")
    with open(data, "w") as f:
        f.write(json.dumps({"input_ids": sample, "labels": [-100, -100] + sample[2:]}) + "\n")
    run = os.path.join(work, "run")
    r = subprocess.run([BINARY, "tune", "--model", base, "--adapter", start, "--data", data, "--out", run, "--steps", "2",
                        "--lr", "0.5", "--schedule", "constant", "--warmup", "0", "--clip", "0", "--adam-eps", "1",
                        "--batch-tokens", "16", "--overwrite"], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"upcycle tune --adapter failed:\n{r.stderr}")
    model = transformers.LlamaForCausalLM.from_pretrained(base)
    adapted = peft.PeftModel.from_pretrained(model, start, is_trainable=True)
    trained = [p for p in adapted.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=0.5, betas=(0.9, 0.999), eps=1.0, weight_decay=0.0)
    ids = torch.tensor([sample])
    labels = torch.tensor([[-100, -100] + sample[2:]])
    for _ in range(2):
        optimizer.zero_grad()
        adapted(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
    ours = load_file(os.path.join(run, "final", "adapter_model.safetensors"))
    theirs = {k.replace(".default", ""): v.detach().float().numpy() for k, v in adapted.named_parameters()
              if v.requires_grad}
    moved = max(np.abs(v - load_file(os.path.join(start, "adapter_model.safetensors"))[k]).max()
                for k, v in theirs.items())
    error = max(np.abs(ours[k] - v).max() for k, v in theirs.items())
    print(f"trained: {len(theirs)} tensors after 2 steps, max |upcycle - PEFT| = {error:.2e} (training moved them by "
          f"up to {moved:.2e})")
    failures = [] if error < 1e-5 and moved > 1e-2 and set(ours) == set(theirs) else ["trained"]
    # PEFT reads the folder tune wrote and computes our logits with it.
    folder = os.path.join(run, "final")
    loaded = peft.PeftModel.from_pretrained(transformers.LlamaForCausalLM.from_pretrained(base), folder).eval()
    with torch.no_grad():
        want = loaded(input_ids=torch.tensor([TOKENS])).logits[0].float().numpy()
    got = upcycle_logits(base, folder, work)
    error = np.abs(got - want).max() / np.abs(want).max()
    print(f"trained: PeftModel on tune's folder, max |upcycle - PEFT| / max |logit| = {error:.2e}")
    return failures + ([] if error < 1e-5 else ["tune's folder in PEFT"])


def main():
    failures = []
    with tempfile.TemporaryDirectory() as work:
        base = os.path.join(work, "base")
        for name, rslora, targets in [("plain", False, ["q_proj", "v_proj", "gate_proj", "down_proj"]),
                                      ("rslora", True, ["k_proj", "o_proj", "up_proj"])]:
            model = write_tiny_llama(torch, transformers, base)
            config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, bias="none",
                                     task_type="CAUSAL_LM", use_rslora=rslora, init_lora_weights=False)
            torch.manual_seed(1)
            adapted = peft.get_peft_model(model, config).eval()
            folder = os.path.join(work, name)
            adapted.save_pretrained(folder, safe_serialization=True)
            with torch.no_grad():
                want = adapted(input_ids=torch.tensor([TOKENS])).logits[0].float().numpy()
                plain = adapted.get_base_model()
                with adapted.disable_adapter():
                    base_logits = plain(input_ids=torch.tensor([TOKENS])).logits[0].float().numpy()
            got = upcycle_logits(base, folder, work)
            failures += check_merged(base, folder, adapted, work)
            scale = np.abs(want).max()
            error = np.abs(got - want).max() / scale
            moved = np.abs(want - base_logits).max() / scale
            print(f"{name}: max |upcycle - PEFT| / max |logit| = {error:.2e} (the adapter moved them by {moved:.2e})")
            if not error < 1e-5 or not moved > 1e-3:
                failures.append(name)
            if name == "plain":
                failures += check_trained(base, folder, work)
    if failures:
        sys.exit(f"logits differ from PEFT's: {failures}")
    print("PEFT's adapters give PEFT's logits")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""`upcycle tune --tensorboard DIR` writes event files that TensorBoard's own reader
(EventAccumulator) loads, with the same numbers as metrics.jsonl: every step's loss and
learning rate, and an MoE's per-layer routing (idlest share, router entropy, each expert's
share). Exits 77 (skipped) when the tensorboard package or the binary is missing.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

BINARY = os.environ.get("UPCYCLE_BINARY", "")


def run(*args):
    r = subprocess.run([BINARY, *args], capture_output=True)
    if r.returncode != 0:
        raise SystemExit(f"FAIL: upcycle {' '.join(args)}: {r.stderr.decode(errors='replace')}")


def main():
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        print("skipped: the tensorboard package is not installed")
        return 77
    if not os.path.exists(BINARY):
        print("skipped: needs UPCYCLE_BINARY (set by ctest)")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        dense, moe, data = (os.path.join(tmp, n) for n in ("dense", "moe", "train.jsonl"))
        run("init", "-q", "--preset", "demo", "--tokenizer", "bytes", "--out", dense)
        run("convert", "--checkpoints", dense, "--method", "sparse", "--experts", "4", "--out", moe)
        run("data", "synth", "--n", "40", "--out", data)
        logs = os.path.join(tmp, "tb")
        run("tune", "--model", moe, "--data", data, "--out", os.path.join(tmp, "run"), "--steps", "5",
            "--batch-tokens", "512", "--tensorboard", logs)
        files = glob.glob(os.path.join(logs, "events.out.tfevents.*"))
        if len(files) != 1:
            print(f"FAIL: expected one event file in {logs}, found {files}")
            return 1
        events = EventAccumulator(logs, size_guidance={"scalars": 0})
        events.Reload()
        with open(os.path.join(tmp, "run", "metrics.jsonl"), encoding="utf-8") as f:
            metrics = [json.loads(line) for line in f if '"loss"' in line]
        failures = 0
        tags = set(events.Tags()["scalars"])
        for tag, value in (("loss", lambda m: m["loss"]), ("lr", lambda m: m["lr"]),
                           ("load_idlest/layer0", lambda m: m["load_idlest"][0]),
                           ("router_entropy/layer3", lambda m: m["router_entropy"][3]),
                           ("expert_load/layer1/expert2", lambda m: m["expert_load"][1][2])):
            if tag not in tags:
                print(f"FAIL: no scalar {tag} (have {sorted(tags)[:8]}...)")
                failures += 1
                continue
            got = [(e.step, e.value) for e in events.Scalars(tag)]
            want = [(m["step"], value(m)) for m in metrics]
            ok = len(got) == len(want) and all(a[0] == b[0] and abs(a[1] - b[1]) <= 1e-6 * max(1.0, abs(b[1]))
                                               for a, b in zip(got, want))
            print(f"{tag}: {'ok' if ok else 'DIFFERENT'}: {got[:3]} against {want[:3]}")
            failures += int(not ok)
        return int(failures > 0)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Decoding speed of `upcycle generate` against llama.cpp and transformers, in one run, on the same
# files of SmolLM2-135M-Instruct: GGUFs in f32, bf16 and Q8_0 made by llama.cpp's own converter
# (convert_hf_to_gguf.py, from llama-cpp-python's source package) from `upcycle export`'s f32
# folder, and the Q4_1 file as published (scripts/fetch-smollm2.sh); the same prompt, token
# count and threads; runs alternating, medians reported.
#   scripts/bench-generate.sh --python PYTHON [--convert-python PYTHON] [--tokens 128]
#                             [--repeats 3] [--threads N] [--prompt TEXT] [--out FILE.json]
# PYTHON has llama-cpp-python (pip builds llama.cpp from source). --convert-python (default:
# PYTHON) has torch, transformers, sentencepiece and numpy: the converter needs them, and the
# transformers row (f32) runs on it. Each peer runs in scripts/bench-generate-peer.py. Files go under
# ${UPCYCLE_CACHE:-~/.cache/upcycle}/bench-generate and are made once. upcycle is built as
# scripts/test.sh builds it (or UPCYCLE_BIN).
set -euo pipefail
# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
here=$UPCYCLE_ROOT/scripts
die() { printf 'bench-generate.sh: error: %s\n' "$*" >&2; exit 1; }

python="" convert_python="" tokens=128 repeats=3 threads=$(nproc) prompt="Once upon a time" out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --python) python="$2"; shift 2 ;;
    --convert-python) convert_python="$2"; shift 2 ;;
    --tokens) tokens="$2"; shift 2 ;;
    --repeats) repeats="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --prompt) prompt="$2"; shift 2 ;;
    --out) out=$(upcycle_abspath "$2"); shift 2 ;;
    -h|--help) upcycle_help "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ -n $python ]] || die "--python PYTHON (with llama-cpp-python) is required"
convert_python=${convert_python:-$python}
"$python" -c "import llama_cpp" 2>/dev/null || die "$python has no llama_cpp (pip install llama-cpp-python)"

upcycle_bench_binary
work="${UPCYCLE_CACHE:-${HOME:?HOME is not set}/.cache/upcycle}/bench-generate"
mkdir -p "$work"

# The f32 folder, and llama.cpp's converter from the source package of the installed version.
folder="$work/smollm2-f32"
published=$(bash "$here/fetch-smollm2.sh")
if [[ ! -d $folder ]]; then
  upcycle_say "export: SmolLM2 to $folder"
  "$bin" export -q "$published" "$folder" --dtype f32
fi
ln -sf "$published" "$work/smollm2-q4_1.gguf"
version=$("$python" -c "import llama_cpp; print(llama_cpp.__version__)")
llama_src="$work/llama-cpp-python-$version"
if [[ ! -f $llama_src/vendor/llama.cpp/convert_hf_to_gguf.py ]]; then
  upcycle_say "llama-cpp-python $version source package (for convert_hf_to_gguf.py)"
  "$python" -m pip download -q --no-deps --no-binary :all: -d "$work/sdist" "llama-cpp-python==$version"
  mkdir -p "$llama_src.partial"
  tar xzf "$work/sdist/llama_cpp_python-$version.tar.gz" -C "$llama_src.partial" --strip-components 1
  mv "$llama_src.partial" "$llama_src"
fi
converter="$llama_src/vendor/llama.cpp"
for type in f32 bf16 q8_0; do
  gguf="$work/smollm2-$type.gguf"
  [[ -f $gguf ]] && continue
  upcycle_say "convert_hf_to_gguf.py --outtype $type"
  PYTHONPATH="$converter/gguf-py" "$convert_python" "$converter/convert_hf_to_gguf.py" "$folder" \
    --outtype "$type" --outfile "$gguf.partial" >&2
  mv "$gguf.partial" "$gguf"
done

# Alternating runs, one JSON line each: {"tool", "type", "decode_tokens_per_s", "tokens", "text"}.
runs="$work/runs.jsonl"
: >"$runs"
for ((r = 1; r <= repeats; r++)); do
  for type in f32 bf16 q8_0 q4_1; do
    gguf="$work/smollm2-$type.gguf"
    upcycle_say "repeat $r/$repeats: $type"
    # A peer that fails on one file (llama.cpp's AMX path has crashed on Q8_0 here) is recorded and
    # reported, not the end of the run.
    if peer=$(OMP_NUM_THREADS=$threads "$python" "$here/bench-generate-peer.py" llama.cpp "$gguf" --prompt "$prompt" \
              --tokens "$tokens" --threads "$threads" --json); then :; else
      status=$?
      echo "bench-generate.sh: llama.cpp failed on $gguf (exit $status)" >&2
      peer="{\"error\": \"exit $status\"}"
    fi
    "$python" -c "import json,sys; j=json.loads(sys.argv[1]); j.update(tool='llama.cpp', type='$type'); print(json.dumps(j))" \
      "$peer" >>"$runs"
    OMP_NUM_THREADS=$threads "$bin" generate --model "$gguf" --prompt "$prompt" --max-new-tokens "$tokens" --json |
      "$python" -c "import json,sys; j=json.load(sys.stdin); j.update(tool='upcycle', type='$type'); print(json.dumps(j))" >>"$runs"
  done
done
torch_line=""
if torch_line=$(OMP_NUM_THREADS=$threads "$convert_python" "$here/bench-generate-peer.py" transformers "$folder" \
                --prompt "$prompt" --tokens "$tokens" --threads "$threads" --json 2>/dev/null); then :; else torch_line=""; fi

"$python" - "$runs" "$torch_line" "$out" "$threads" "$tokens" <<'PY'
import json, statistics, sys
runs_file, torch_line, out, threads, tokens = sys.argv[1:]
runs = [json.loads(l) for l in open(runs_file)]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rows = {}
print(f"decoding tokens/s, {tokens} new tokens, {threads} threads, {cpu}")
for t in ("f32", "bf16", "q8_0", "q4_1"):
    ours = [r["decode_tokens_per_s"] for r in runs if r["type"] == t and r["tool"] == "upcycle"]
    theirs = [r["decode_tokens_per_s"] for r in runs if r["type"] == t and r["tool"] == "llama.cpp" and "error" not in r]
    failed = [r["error"] for r in runs if r["type"] == t and r["tool"] == "llama.cpp" and "error" in r]
    if failed:  # no ratio from a partial set of runs
        rows[t] = {"upcycle": ours, "llama_cpp": theirs, "llama_cpp_failed": failed}
        print(f"{t:5s} upcycle {statistics.median(ours):7.1f}   llama.cpp failed ({', '.join(failed)})")
        continue
    texts = {r["tool"]: r["text"].strip() for r in runs if r["type"] == t}
    row = {"upcycle": ours, "llama_cpp": theirs, "ratio": statistics.median(ours) / statistics.median(theirs),
           "same_text": texts.get("upcycle") == texts.get("llama.cpp")}
    rows[t] = row
    print(f"{t:5s} upcycle {statistics.median(ours):7.1f}   llama.cpp {statistics.median(theirs):7.1f}   "
          f"ratio {row['ratio']:.2f}   same text: {'yes' if row['same_text'] else 'no'}")
result = {"cpu": cpu, "threads": int(threads), "tokens": int(tokens), "gguf": rows}
if torch_line:
    torch = json.loads(torch_line)
    ours = statistics.median(rows["f32"]["upcycle"])
    result["transformers_f32"] = {"decode_tokens_per_s": torch["decode_tokens_per_s"],
                                  "ratio": ours / torch["decode_tokens_per_s"]}
    print(f"f32   transformers {torch['decode_tokens_per_s']:7.1f}   upcycle (f32 GGUF) {ours:7.1f}   "
          f"ratio {ours / torch['decode_tokens_per_s']:.2f}")
else:
    print("transformers: skipped (no torch and transformers in --convert-python)")
if out:
    with open(out + ".partial", "w") as f:
        json.dump(result, f, indent=2)
    import os
    os.replace(out + ".partial", out)
PY

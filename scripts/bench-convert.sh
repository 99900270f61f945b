#!/usr/bin/env bash
# Measures `upcycle convert` (dense checkpoints into their family's MoE: Mixtral, Qwen2-MoE or
# Qwen3-MoE) against a plain copy of the input bytes and, when a Python with mergekit is given,
# against mergekit-moe assembling the same Mixtral from the same checkpoints (gate_mode: random).
# The inputs are 4 synthetic checkpoints of a preset's shape made by `upcycle init --preset P
# --seed k --std 0.02` (k = 0..3).
#
#   scripts/bench-convert.sh [--dir DIR] [--preset NAME] [--dtype bf16] [--experts E]
#                            [--method both|upit|btx] [--mergekit PYTHON] [--json FILE]
#                            [--keep] [--repeat N]
#
#   --dir DIR          scratch folder (default: runs/bench-convert in the repository); needs
#                      the 4 inputs, a copy of them and one output at a time (llama-1b in bf16:
#                      8.8 GB of inputs, about 31 GB free in all)
#   --preset NAME      `upcycle init` preset of the checkpoints (default llama-1b, 1.1 B params)
#   --dtype DTYPE      dtype of the checkpoints and of every output (default bf16)
#   --experts E        experts of the UpIT run (default 8; with E > 4 the genetic search grows
#                      E - 4 children, reading the 4 checkpoints' FFNs once per round)
#   --method M         upit: `convert --experts E --router random` (UpIT, with the search when
#                      E > 4); btx: `convert --experts 4 --method btx --router random` (pure
#                      assembly, one expert per checkpoint); both (default)
#   --mergekit PYTHON  a python with mergekit installed: also times `mergekit-moe` building the
#                      same Mixtral (upit: E experts, the checkpoints c0..c3 repeated in turn;
#                      btx: c0..c3), base_model c0, dtype as --dtype, gate_mode random, on the
#                      CPU with --lazy-unpickle (MERGEKIT_FLAGS replaces these flags). Skipped
#                      when absent. mergekit needs a tokenizer in the base model, so the inputs
#                      get a 3-token WordLevel tokenizer.json (a few hundred bytes; both tools
#                      copy it)
#   --json FILE        also write the results as JSON
#   --keep             keep the generated inputs (a later run with the same preset reuses them)
#   --repeat N         time each step N times and report the fastest (default 1); peak RSS is
#                      the largest of the N
#
# Before each timed step the page cache is warmed by reading the inputs once (not timed), and
# every output is synced to disk inside the timed step (`sync` of the copied files after
# `cp -r`; the upcycle writers fsync each file; `sync` of its files after mergekit-moe, which
# does not). Each line gives seconds, MB/s (10^6 bytes) of input bytes (4 x the checkpoint)
# and of output bytes, the ratio to the copy (input bytes per second, and input + output bytes
# per second, over the copy's) and the peak resident memory (/usr/bin/time -v). Then the
# ratios upcycle / mergekit of time and peak RSS. Outputs are removed between runs (not timed).
# Builds upcycle first, with the settings of scripts/test.sh (UPCYCLE_BUILD_DIR, CMAKE_ARGS,
# ...), unless UPCYCLE_BIN names a binary.
set -euo pipefail

die() { printf 'bench-convert: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'bench-convert: %s\n' "$*" >&2; }

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

dir="$UPCYCLE_ROOT/runs/bench-convert"
preset=llama-1b
dtype=bf16
experts=8
method=both
mergekit=""
json=""
keep=0
repeat=1
while (($#)); do
  case "$1" in
    --dir) [[ $# -ge 2 ]] || die "--dir needs a value"; dir=$(upcycle_abspath "$2"); shift 2 ;;
    --preset) [[ $# -ge 2 ]] || die "--preset needs a value"; preset=$2; shift 2 ;;
    --dtype) [[ $# -ge 2 && $2 =~ ^(f32|bf16|f16)$ ]] || die "--dtype needs f32, bf16 or f16"; dtype=$2; shift 2 ;;
    --experts) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--experts needs a number >= 1"; experts=$2; shift 2 ;;
    --method) [[ $# -ge 2 && $2 =~ ^(both|upit|btx)$ ]] || die "--method needs both, upit or btx"; method=$2; shift 2 ;;
    --mergekit) [[ $# -ge 2 ]] || die "--mergekit needs a python"; mergekit=$2; shift 2 ;;
    --json) [[ $# -ge 2 ]] || die "--json needs a value"; json=$(upcycle_abspath "$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    --repeat) [[ $# -ge 2 && $2 =~ ^[1-9][0-9]*$ ]] || die "--repeat needs a number >= 1"; repeat=$2; shift 2 ;;
    -h|--help) upcycle_help "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
cd "$UPCYCLE_ROOT"

upcycle_bench_binary
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (Debian package 'time'; scripts/deps.sh installs it)"
"$bin" convert --help >/dev/null 2>&1 || die "this upcycle has no 'convert' command yet ($bin)"

mergekit_moe=""
if [[ -n $mergekit ]]; then
  if ! command -v "$mergekit" >/dev/null 2>&1; then
    log "no python at '$mergekit': skipping mergekit"
  elif ! "$mergekit" -c 'import mergekit.scripts.moe' 2>/dev/null; then
    log "'$mergekit' has no mergekit (pip install mergekit): skipping mergekit"
  else
    mergekit_moe=$(command -v "$mergekit")
    mergekit_version=$("$mergekit_moe" -c 'import importlib.metadata as m; print(m.version("mergekit"))')
  fi
fi
read -r -a mergekit_flags <<<"${MERGEKIT_FLAGS:---device cpu --lazy-unpickle}"

mkdir -p "$dir"
inputs="$dir/inputs"
ckpts=("$inputs/c0" "$inputs/c1" "$inputs/c2" "$inputs/c3")
out="$dir/out"
copy="$dir/copy"
logs="$dir/logs"
timing="$dir/time.txt"
mkconfig="$dir/mergekit-moe.yml"

cleanup() {
  rm -rf "$out" "$copy" "$timing" "$mkconfig"
  if [[ $keep == 0 ]]; then
    rm -rf "$inputs" "$logs"
    rmdir "$dir" 2>/dev/null || true  # only when nothing else is left in it
  fi
}
trap cleanup EXIT

free_bytes() { df -B1 --output=avail "$dir" | tail -n 1 | tr -d ' '; }
tree_bytes() { find "$@" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f\n", s }'; }

# Runs a command under /usr/bin/time -v, its output into $logs/$1.log; sets elapsed (seconds)
# and rss_mb (peak resident, MB).
timed() {
  local name=$1
  shift
  mkdir -p "$logs"
  if ! /usr/bin/time -v -o "$timing" "$@" >"$logs/$name.log" 2>&1; then
    tail -n 20 "$logs/$name.log" >&2
    cat "$timing" >&2
    die "failed: $*"
  fi
  elapsed=$(awk -F': ' '/Elapsed \(wall clock\)/ {
      n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.3f", s }' "$timing")
  rss_mb=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$timing")
}

# --- the inputs -------------------------------------------------------------------------------
for k in 0 1 2 3; do
  c=${ckpts[$k]}
  want="preset=$preset dtype=$dtype seed=$k std=0.02"
  if [[ -d $c && -f $c.stamp && "$(cat "$c.stamp")" == "$want" ]]; then
    log "reusing $c ($want)"
    continue
  fi
  rm -rf "$c" "$c.stamp"
  mkdir -p "$inputs"
  log "generating $c: upcycle init --preset $preset --dtype $dtype --seed $k --std 0.02"
  timed "init-c$k" "$bin" init --preset "$preset" --dtype "$dtype" --seed "$k" --std 0.02 --out "$c" -q
  log "  generated in ${elapsed} s (peak RSS ${rss_mb} MB)"
  printf '%s\n' "$want" >"$c.stamp"
done
# A minimal tokenizer (mergekit-moe loads the base model's; upcycle convert copies it along).
for c in "${ckpts[@]}"; do
  [[ -f $c/tokenizer.json ]] && continue
  cat >"$c/tokenizer.json" <<'EOF'
{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
 "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
 "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2}, "unk_token": "<unk>"}}
EOF
  printf '%s\n' '{"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}' \
    >"$c/tokenizer_config.json"
done
ckpt_bytes=$(tree_bytes "${ckpts[0]}")
in_bytes=$(tree_bytes "${ckpts[@]}")
params=$("$bin" inspect "${ckpts[0]}" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["params"])')
need=$((in_bytes + in_bytes * (experts + 2) / 8))  # a copy, then the largest output (with headroom)
(($(free_bytes) > need)) || die "need about $((need / 1000000)) MB free in $dir for the copy and the outputs"
log "inputs: 4 x $ckpt_bytes bytes ($params parameters each, $dtype) = $in_bytes bytes in $inputs"

# --- the measurements -------------------------------------------------------------------------
names=() seconds=() rss=() out_bytes=() commands=()
measure() {
  local name=$1 key=$2 target=$3 best="" best_rss=0 size=0 r
  shift 3
  log "$name: $*"
  for ((r = 1; r <= repeat; r++)); do
    rm -rf "$target"
    sync
    find "${ckpts[@]}" -type f -exec cat {} + >/dev/null  # warm the page cache, not timed
    timed "$key" "$@"
    grep -E 'done in|expansion round|wrote a mixtral' "$logs/$key.log" | sed 's/^/    /' >&2 || true
    log "  run $r: ${elapsed} s, peak RSS ${rss_mb} MB"
    if [[ -z $best ]] || awk -v a="$elapsed" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$elapsed; fi
    if awk -v a="$rss_mb" -v b="$best_rss" 'BEGIN { exit !(a > b) }'; then best_rss=$rss_mb; fi
    size=$(tree_bytes "$target")
    rm -rf "$target"
  done
  names+=("$name")
  seconds+=("$best")
  rss+=("$best_rss")
  out_bytes+=("$size")
  commands+=("$*")
}

# The mergekit-moe config: base_model c0, the experts given, gate_mode random.
write_mergekit_config() {
  local mk_dtype e
  case $dtype in bf16) mk_dtype=bfloat16 ;; f16) mk_dtype=float16 ;; *) mk_dtype=float32 ;; esac
  {
    printf 'base_model: %s\ngate_mode: random\ndtype: %s\nexperts_per_token: 2\nexperts:\n' "${ckpts[0]}" "$mk_dtype"
    for e in "$@"; do printf '  - source_model: %s\n' "$e"; done
  } >"$mkconfig"
}
# mergekit-moe does not fsync: the sync belongs to the timed step, as for the copy.
# shellcheck disable=SC2016  # $0.. are the inner shell's
mergekit_run=(sh -c '"$0" -m mergekit.scripts.moe "$@" && sync "$2"/*' "$mergekit_moe" "$mkconfig" "$out"
  "${mergekit_flags[@]}" --random-seed 0 --i-understand-this-is-not-useful-without-training)

# shellcheck disable=SC2016  # $0/$1.. are the inner shell's
measure "copy (cp -r + sync)" copy "$copy" \
  sh -c 'mkdir -p "$0" && for c in "$@"; do cp -r "$c" "$0"/; done && sync "$0"/*/*' "$copy" "${ckpts[@]}"
pairs=()  # "upcycle index:mergekit index" of the like-for-like runs
if [[ $method == both || $method == upit ]]; then
  measure "upcycle upit E=$experts" "upit" "$out" "$bin" convert --checkpoints "${ckpts[@]}" \
    --experts "$experts" --top-k 2 --router random --dtype "$dtype" --seed 0 --out "$out" --overwrite
  u=$((${#names[@]} - 1))
  if [[ -n $mergekit_moe ]]; then
    list=()
    for ((e = 0; e < experts; e++)); do list+=("${ckpts[$((e % 4))]}"); done
    write_mergekit_config "${list[@]}"
    measure "mergekit-moe E=$experts" "mergekit-$experts" "$out" "${mergekit_run[@]}"
    commands[-1]="mergekit-moe CONFIG OUT ${mergekit_flags[*]} --random-seed 0 --i-understand-this-is-not-useful-without-training && sync OUT/* (experts ${list[*]##*/})"
    pairs+=("$u:$((${#names[@]} - 1))")
  fi
fi
if [[ $method == both || $method == btx ]]; then
  measure "upcycle btx E=4" "btx" "$out" "$bin" convert --checkpoints "${ckpts[@]}" \
    --experts 4 --method btx --top-k 2 --router random --dtype "$dtype" --seed 0 --out "$out" --overwrite
  u=$((${#names[@]} - 1))
  if [[ -n $mergekit_moe ]]; then
    write_mergekit_config "${ckpts[@]}"
    measure "mergekit-moe E=4" "mergekit-4" "$out" "${mergekit_run[@]}"
    commands[-1]="mergekit-moe CONFIG OUT ${mergekit_flags[*]} --random-seed 0 --i-understand-this-is-not-useful-without-training && sync OUT/* (experts c0 c1 c2 c3)"
    pairs+=("$u:$((${#names[@]} - 1))")
  fi
fi

# --- the report -------------------------------------------------------------------------------
mb_s() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", (s > 0) ? b / 1e6 / s : 0 }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
in_mbps=() out_mbps=() vs_in=() vs_io=()
copy_io=$(mb_s "$((in_bytes + out_bytes[0]))" "${seconds[0]}")
for i in "${!names[@]}"; do
  in_mbps+=("$(mb_s "$in_bytes" "${seconds[$i]}")")
  out_mbps+=("$(mb_s "${out_bytes[$i]}" "${seconds[$i]}")")
  vs_in+=("$(div "${in_mbps[$i]}" "${in_mbps[0]}")")
  vs_io+=("$(div "$(mb_s "$((in_bytes + out_bytes[i]))" "${seconds[$i]}")" "$copy_io")")
done
printf '\nconvert of 4 x %s bytes (%s parameters each, %s, preset %s) on %s cores; fastest of %s\n' \
  "$ckpt_bytes" "$params" "$dtype" "$preset" "$(nproc)" "$repeat"
printf 'run(s); in MB/s counts the 4 inputs once, out MB/s the output; vs copy: input bytes/s, and\n'
printf 'input + output bytes/s, over the copy'"'"'s%s\n\n' "${mergekit_moe:+; mergekit $mergekit_version (${mergekit_flags[*]})}"
printf '%-22s %9s %9s %9s %8s %8s %12s %10s\n' "step" "seconds" "in MB/s" "out MB/s" "vs copy" "vs c I/O" "peak RSS MB" "output MB"
for i in "${!names[@]}"; do
  printf '%-22s %9s %9s %9s %8s %8s %12s %10.1f\n' "${names[$i]}" "${seconds[$i]}" "${in_mbps[$i]}" \
    "${out_mbps[$i]}" "${vs_in[$i]}" "${vs_io[$i]}" "${rss[$i]}" "$(awk -v b="${out_bytes[$i]}" 'BEGIN { print b / 1e6 }')"
done
if ((${#pairs[@]})); then
  printf '\n%-44s %16s %16s\n' "upcycle vs mergekit" "speed-up (x)" "memory ratio"
  for p in "${pairs[@]}"; do
    u=${p%%:*} m=${p##*:}
    printf '%-44s %16s %16s\n' "${names[$u]} / ${names[$m]}" "$(div "${seconds[$m]}" "${seconds[$u]}")" \
      "$(div "${rss[$u]}" "${rss[$m]}")"
  done
fi

if [[ -n $json ]]; then
  mkdir -p "$(dirname "$json")"
  esc() { local s=${1//\\/\\\\}; printf '%s' "${s//\"/\\\"}"; }
  {
    printf '{\n  "preset": "%s",\n  "dtype": "%s",\n  "params_per_checkpoint": %s,\n  "checkpoint_bytes": %s,\n' \
      "$preset" "$dtype" "$params" "$ckpt_bytes"
    printf '  "input_bytes": %s,\n  "experts": %s,\n  "cores": %s,\n  "repeat": %s,\n  "mergekit": %s,\n  "results": [\n' \
      "$in_bytes" "$experts" "$(nproc)" "$repeat" \
      "$([[ -n $mergekit_moe ]] && printf '{"version": "%s", "flags": "%s"}' "$mergekit_version" "$(esc "${mergekit_flags[*]}")" || printf null)"
    for i in "${!names[@]}"; do
      printf '    {"step": "%s", "command": "%s", "seconds": %s, "in_mb_per_s": %s, "out_mb_per_s": %s, "ratio_to_copy": %s, "io_ratio_to_copy": %s, "peak_rss_mb": %s, "output_bytes": %s}%s\n' \
        "${names[$i]}" "$(esc "${commands[$i]}")" "${seconds[$i]}" "${in_mbps[$i]}" "${out_mbps[$i]}" \
        "${vs_in[$i]}" "${vs_io[$i]}" "${rss[$i]}" "${out_bytes[$i]}" "$([[ $i -lt $((${#names[@]} - 1)) ]] && printf ',')"
    done
    printf '  ],\n  "upcycle_vs_mergekit": ['
    sep=""
    for p in "${pairs[@]}"; do
      u=${p%%:*} m=${p##*:}
      printf '%s\n    {"upcycle": "%s", "mergekit": "%s", "speedup": %s, "rss_ratio": %s}' "$sep" "${names[$u]}" \
        "${names[$m]}" "$(div "${seconds[$m]}" "${seconds[$u]}")" "$(div "${rss[$u]}" "${rss[$m]}")"
      sep=","
    done
    printf '\n  ]\n}\n'
  } >"$json"
  log "wrote $json"
fi

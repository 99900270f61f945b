#!/usr/bin/env bash
# Measures `upcycle tune` over several processes (mpirun -np N, one thread each) against one
# process with one thread: tokens per second, the bytes each process sends per step (from the
# run's log), and each process's peak RSS, plain and with --shard-optimizer. The model is a
# preset's shape with random weights; the data is random pre-tokenized sequences.
#
#   scripts/bench-parallel.sh [--dir DIR] [--preset NAME] [--processes 1,2] [--steps S]
#                             [--batch-tokens T] [--json FILE]
#
#   --dir DIR          scratch folder (default: runs/bench-parallel in the repository)
#   --preset NAME      `upcycle init` preset (default smollm2-135m, 134.5M parameters)
#   --processes LIST   process counts to run (default 1,2); 1 runs without mpirun
#   --steps S          optimizer steps per run (default 6); the first is not timed
#   --batch-tokens T   tokens per micro-batch (default 512); a step is 2 micro-batches at every
#                      count (grad-accum 2), so a run at N = 2 takes one each
#   --json FILE        also write the results as JSON
#
# Needs an upcycle built with MPI (`upcycle --version` says `processes: MPI`) and mpirun on the
# PATH. Each figure is one run: quote ratios from one invocation only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

dir=$UPCYCLE_ROOT/runs/bench-parallel preset=smollm2-135m counts=1,2 steps=6 batch=512 json=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dir) dir=$(upcycle_abspath "$2"); shift 2 ;;
    --preset) preset=$2; shift 2 ;;
    --processes) counts=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --batch-tokens) batch=$2; shift 2 ;;
    --json) json=$(upcycle_abspath "$2"); shift 2 ;;
    -h|--help) upcycle_help "$0"; exit 0 ;;
    *) echo "bench-parallel: unknown argument '$1' (see --help)" >&2; exit 1 ;;
  esac
done
upcycle_bench_binary
"$bin" --version | grep -q "processes: MPI" || { echo "bench-parallel: $bin was built without MPI" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "bench-parallel: no mpirun on the PATH" >&2; exit 1; }

mkdir -p "$dir"
model=$dir/model-$preset data=$dir/data.jsonl
[[ -d $model ]] || "$bin" init --preset "$preset" --out "$model" --seed 1 >/dev/null 2>&1
vocab=$("$bin" inspect "$model" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["vocab_size"])')
python3 - "$data" "$vocab" "$batch" <<'EOF'
import json, random, sys
path, vocab, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(1)
with open(path, "w") as f:  # samples of a micro-batch's length, one per micro-batch
    for _ in range(256):
        f.write(json.dumps({"input_ids": [rng.randrange(vocab) for _ in range(batch)]}) + "\n")
EOF

# One run: prints "tokens_per_s sent_bytes_text rss_mb[,rss_mb...]".
run() {
  local n=$1 shard=$2 out=$dir/run-$1-$2
  rm -rf "$out" "$out.rss".*
  local args=(tune --model "$model" --data "$data" --out "$out" --steps "$steps" --batch-tokens "$batch"
              --grad-accum 2 --lr 1e-4 --seed 1)
  [[ $shard == sharded ]] && args+=(--shard-optimizer)
  if [[ $n == 1 ]]; then
    OMP_NUM_THREADS=1 /usr/bin/time -f %M -o "$out.rss.0" "$bin" "${args[@]}" 2>"$out.log"
  else
    OMP_NUM_THREADS=1 mpirun --oversubscribe --allow-run-as-root -np "$n" \
      sh -c 'exec /usr/bin/time -f %M -o "$0.rss.$OMPI_COMM_WORLD_RANK" "$@"' "$out" "$bin" "${args[@]}" 2>"$out.log"
  fi
  python3 - "$out" "$n" <<'EOF'
import glob, json, re, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
rates = [json.loads(l)["tokens_per_s"] for l in open(out + "/metrics.jsonl")][1:]
log = open(out + ".log").read()
sent = re.search(r"([0-9.]+ [kMG]?B) sent by each process per step", log)
rss = [int(open(f).read().split()[-1]) / 1024 for f in sorted(glob.glob(out + ".rss.*"))]
print(f"{statistics.median(rates):.1f} {sent.group(1).replace(' ', '') if sent else '0B'} "
      + ",".join(f"{r:.0f}" for r in rss))
EOF
}

results=()
printf '%-10s %-9s %12s %14s %s\n' processes optimizer tokens/s sent/step "peak RSS per process (MB)"
IFS=, read -ra ns <<<"$counts"
for n in "${ns[@]}"; do
  for shard in plain sharded; do
    [[ $n == 1 && $shard == sharded ]] && continue
    read -r rate sent rss < <(run "$n" "$shard")
    printf '%-10s %-9s %12s %14s %s\n' "$n" "$shard" "$rate" "$sent" "$rss"
    results+=("{\"processes\": $n, \"optimizer\": \"$shard\", \"tokens_per_s\": $rate, \"sent_per_step\": \"$sent\", \"peak_rss_mb\": [$rss]}")
  done
done
if [[ -n $json ]]; then
  (IFS=,; printf '{"preset": "%s", "batch_tokens": %s, "steps": %s, "runs": [%s]}\n' "$preset" "$batch" "$steps" "${results[*]}") >"$json"
fi

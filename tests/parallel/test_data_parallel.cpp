// `mpirun -np 2 upcycle tune` end to end on tiny models: two processes train as one within 1e-5,
// byte-identically from run to run, resume at another count, LoRA too, AdamW sharded; misuse and a
// hung or killed process are named. Skipped (with a message) in a build without MPI.
#include <doctest/doctest.h>

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cmath>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

#ifdef UPCYCLE_MPIEXEC
constexpr bool kMpi = true;
constexpr const char* kMpiexec = UPCYCLE_MPIEXEC;
#else
constexpr bool kMpi = false;
constexpr const char* kMpiexec = "";
#endif

bool mpi_built() {
  if (!kMpi) MESSAGE("skipped: this build has no MPI (scripts/deps.sh installs OpenMPI)");
  return kMpi;
}

// `upcycle ARGS` as n processes (one thread each), through the shell as run_upcycle does.
RunResult run_ranks(int n, const std::string& args) {
  return run_upcycle_with(std::string("'") + kMpiexec + "' --oversubscribe --allow-run-as-root -np " +
                              std::to_string(n) + " env OMP_NUM_THREADS=1 ",
                          args);
}

// The pid of the process of `rank` whose command line holds `marker` (0: none yet), from /proc:
// the launcher gives each process its rank in its environment.
int rank_pid(int rank, const std::string& marker) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  std::error_code ec;  // processes come and go while the folder is read
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline, environ;
    try {
      cmdline = read_file(entry.path() / "cmdline"), environ = read_file(entry.path() / "environ");
    } catch (const std::exception&) {
      continue;  // gone, or not ours to read
    }
    if (cmdline.find(marker) == std::string::npos || cmdline.find("upcycle") == std::string::npos) continue;
    const std::string nul(1, '\0');
    if ((nul + environ + nul).find(nul + want + nul) == std::string::npos) continue;
    return std::stoi(name);
  }
  return 0;
}

fs::path tiny_model(const ScratchDir& dir, const std::string& type, uint64_t seed) {
  return write_model(dir, type, tiny_config(type), seed);
}

// The step losses of a run at n processes (n = 0: one process, launched without mpirun).
std::vector<double> losses(int n, const std::string& args, const fs::path& out) {
  const RunResult r = n ? run_ranks(n, args + " --out " + q(out)) : run_upcycle(args + " --out " + q(out));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  return read_losses(out / "metrics.jsonl");
}

void check_close(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(a[i] - b[i]) <= 1e-5 * std::abs(b[i]));
  }
}

}  // namespace

TEST_CASE("data parallel: 2 processes train a dense model and an MoE as one, byte-identically run to run") {
  if (!mpi_built()) return;
  for (const std::string type : {"llama", "mixtral"}) {
    CAPTURE(type);
    ScratchDir dir;
    const fs::path model = tiny_model(dir, type, 1), data = write_sequences(dir / "data.jsonl", 64);
    // Global-batch balancing counts the step's routing over both processes' micro-batches.
    const std::string args = "tune --model " + q(model) + " --data " + q(data) +
                             " --steps 20 --lr 1e-2 --batch-tokens 48 --grad-accum 4 --seed 5 --aux-loss global-batch";
    const auto one = losses(0, args, dir / "one"), two = losses(2, args, dir / "two");
    CHECK(one.back() < 0.8 * one.front());  // it learns: the comparison is of a real run
    check_close(two, one);
    CHECK(losses(2, args, dir / "again") == two);
    for (const fs::path& run : {dir / "two", dir / "again"})
      CHECK_MESSAGE(fs::exists(run / "final" / "model.safetensors"), run);
    CHECK(read_file(dir / "two" / "final" / "model.safetensors") == read_file(dir / "again" / "final" / "model.safetensors"));
  }
}

TEST_CASE("data parallel: the validation loss and --balance bias's selection bias at 2 processes as at 1") {
  if (!mpi_built()) return;
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "mixtral", 8), data = write_sequences(dir / "data.jsonl", 64);
  const std::string args = "tune --model " + q(model) + " --data " + q(data) +
                           " --steps 12 --lr 1e-2 --batch-tokens 48 --grad-accum 2 --seed 13 --val-fraction 0.25"
                           " --eval-every 4 --balance bias --bias-rate 0.05";
  for (const auto& [n, out] : {std::pair{0, "one"}, std::pair{2, "two"}}) {
    const RunResult r = n ? run_ranks(n, args + " --out " + q(dir / out)) : run_upcycle(args + " --out " + q(dir / out));
    REQUIRE_MESSAGE(r.code == 0, r.err);
  }
  std::ifstream one(dir / "one" / "metrics.jsonl"), two(dir / "two" / "metrics.jsonl");
  int validations = 0;
  for (std::string a, b; std::getline(one, a) && std::getline(two, b);) {
    const auto x = nlohmann::json::parse(a), y = nlohmann::json::parse(b);
    const char* key = x.contains("val_loss") ? "val_loss" : "loss";
    CAPTURE(a);
    validations += x.contains("val_loss");
    CHECK(std::abs(x[key].get<double>() - y[key].get<double>()) <= 1e-5 * std::abs(x[key].get<double>()));
    if (!x.contains("selection_bias")) continue;
    bool moved = false;
    for (size_t l = 0; l < x["selection_bias"].size(); ++l)
      for (size_t e = 0; e < x["selection_bias"][l].size(); ++e) {
        const double bx = x["selection_bias"][l][e].get<double>(), by = y["selection_bias"][l][e].get<double>();
        CHECK(std::abs(bx - by) <= 1e-6);
        moved |= bx != 0;
      }
    if (x["step"].get<int>() > 1) CHECK(moved);  // the bias is at work, not zero throughout
  }
  CHECK(validations == 3);
}

TEST_CASE("data parallel: a run stopped at 2 processes resumes at 1 as it would at 2") {
  if (!mpi_built()) return;
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "llama", 2), data = write_sequences(dir / "data.jsonl", 64);
  const std::string args = "tune --model " + q(model) + " --data " + q(data) +
                           " --steps 20 --lr 1e-2 --batch-tokens 48 --grad-accum 2 --seed 7 --save-every 10 --keep-states";
  const auto straight = losses(2, args, dir / "straight");
  const std::string resume = args + " --resume " + q(dir / "straight" / "step-000010");
  const auto at_one = losses(0, resume, dir / "straight");  // the same folder: metrics keep steps 1-10
  check_close(at_one, straight);
}

TEST_CASE("data parallel: a LoRA adapter trains at 2 processes as at 1") {
  if (!mpi_built()) return;
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "llama", 3), data = write_sequences(dir / "data.jsonl", 64);
  const std::string args = "tune --model " + q(model) + " --data " + q(data) +
                           " --steps 15 --lr 1e-2 --batch-tokens 48 --grad-accum 2 --seed 9 --lora-rank 4";
  check_close(losses(2, args, dir / "two"), losses(0, args, dir / "one"));
  CHECK(fs::exists(dir / "two" / "final" / "adapter_model.safetensors"));
}

TEST_CASE("data parallel: sharded AdamW steps as unsharded, bf16 copies and moments too, and its checkpoints resume") {
  if (!mpi_built()) return;
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "mixtral", 6), data = write_sequences(dir / "data.jsonl", 64);
  const std::string args = "tune --model " + q(model) + " --data " + q(data) +
                           " --steps 12 --lr 1e-2 --batch-tokens 48 --grad-accum 2 --seed 11";
  const auto weights = [&](const std::string& run) { return read_file(dir / run / "final" / "model.safetensors"); };
  // Without clipping the sums and updates are the same numbers: the same bits. (Clipping's norm
  // is summed from each process's share: within rounding.)
  for (const std::string extra : {" --clip 0", " --clip 0 --precision bf16 --bf16-moments"}) {
    CAPTURE(extra);
    const std::string tag = extra.size() > 10 ? "bf16" : "f32";
    losses(2, args + extra, dir / ("plain-" + tag));
    losses(2, args + extra + " --shard-optimizer", dir / ("sharded-" + tag));
    CHECK(weights("plain-" + tag) == weights("sharded-" + tag));
    // The moments the first process gathered as it wrote: the unsharded run's file, byte for byte.
    CHECK(read_file(dir / ("plain-" + tag) / "final" / "optimizer.safetensors") ==
          read_file(dir / ("sharded-" + tag) / "final" / "optimizer.safetensors"));
  }
  // The first process holds the moments of its share alone.
  const RunResult r = run_ranks(2, args + " --shard-optimizer --out " + q(dir / "share"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const size_t at = r.err.find("AdamW's moments of ");
  REQUIRE_MESSAGE(at != std::string::npos, r.err);
  int64_t held = 0, all = 0;
  REQUIRE(std::sscanf(r.err.c_str() + at, "AdamW's moments of %ld of the %ld", &held, &all) == 2);
  CHECK(held > all / 4);
  CHECK(held < all * 3 / 4);
  const auto plain = losses(2, args + " --save-every 6 --keep-states", dir / "plain");
  const auto sharded = losses(2, args + " --save-every 6 --keep-states --shard-optimizer", dir / "sharded");
  check_close(sharded, plain);
  // Its checkpoint holds every moment, as one process's would: the same file.
  CHECK(read_file(dir / "sharded" / "step-000006" / "optimizer.safetensors").size() ==
        read_file(dir / "plain" / "step-000006" / "optimizer.safetensors").size());
  check_close(losses(0, args + " --resume " + q(dir / "sharded" / "step-000006"), dir / "sharded"), plain);
  check_close(losses(2, args + " --shard-optimizer --resume " + q(dir / "plain" / "step-000006"), dir / "plain"), plain);
}

TEST_CASE("data parallel: a step that does not split, and a command that runs as one process, are named") {
  if (!mpi_built()) return;
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "llama", 4), data = write_sequences(dir / "data.jsonl", 8);
  RunResult r = run_ranks(2, "tune --model " + q(model) + " --data " + q(data) + " --out " + q(dir / "run") +
                                 " --steps 2 --grad-accum 3");
  CHECK(r.code != 0);
  CHECK_MESSAGE(r.err.find("--grad-accum 3 does not split over 2 processes") != std::string::npos, r.err);
  CHECK_FALSE(fs::exists(dir / "run"));
  r = run_ranks(2, "inspect " + q(model));
  CHECK(r.code != 0);
  CHECK_MESSAGE(r.err.find("only tune runs across processes") != std::string::npos, r.err);
}

TEST_CASE("data parallel: a process that hangs is named within the timeout, one that dies by the launcher") {
  if (!mpi_built()) return;
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "llama", 5), data = write_sequences(dir / "data.jsonl", 64);
  for (const int signal : {SIGSTOP, SIGKILL}) {
    CAPTURE(signal);
    const fs::path out = dir / ("run" + std::to_string(signal));
    const std::string args = "tune --model " + q(model) + " --data " + q(data) + " --out " + q(out) +
                             " --steps 100000 --batch-tokens 48 --grad-accum 2 --timeout 3";
    const auto start = std::chrono::steady_clock::now();
    std::thread run([&] {
      const RunResult r = run_ranks(2, args);
      CHECK(r.code != 0);
      if (signal == SIGSTOP)
        CHECK_MESSAGE((r.err.find("rank 1 (pid ") != std::string::npos &&
                       r.err.find("has not answered in 3 s") != std::string::npos),
                      r.err);
      else
        CHECK_MESSAGE(r.err.find("rank 1") != std::string::npos, r.err);
    });
    // Rank 1's pid, once it has written a step (its environment names its rank and the run's folder).
    int pid = 0;
    for (int tries = 0; tries < 600 && !pid; ++tries) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (!fs::exists(out / "metrics.jsonl") || fs::file_size(out / "metrics.jsonl") == 0) continue;
      pid = rank_pid(1, out.string());
    }
    if (!pid) {  // it never started: end whatever did, so that the thread returns
      for (int rank : {0, 1})
        if (const int p = rank_pid(rank, out.string())) kill(p, SIGKILL);
    }
    if (pid) kill(pid, signal);
    run.join();
    REQUIRE(pid > 0);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(120));
  }
}

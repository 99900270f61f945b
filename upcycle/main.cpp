// `upcycle COMMAND ...`: dispatch, and the one place errors become messages and exit codes
// (usage 1, bad input 2).
#include <cstdio>
#include <cstring>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <iostream>
#include <new>

#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "core/option_table.hpp"
#include "upcycle/commands.hpp"
#include "upcycle/cuda_plugin.hpp"
#include "parallel/processes.hpp"
#include "upcycle/version.hpp"

namespace {

struct Entry {
  const char* name;
  int (*run)(const upcycle::Args&);
  const char* summary;
  bool parallel = false;  // runs as several processes (mpirun -np N); the others refuse
};

const Entry kCommands[] = {
    {"inspect", upcycle::cmd_inspect, "summarise a checkpoint (any format); --json for scripts"},
    {"export", upcycle::cmd_export, "convert a checkpoint to a Hugging Face folder or HDF5"},
    {"tokenize", upcycle::cmd_tokenize, "text to token ids and back (GGUF, tokenizer.json, tokenizer.model)"},
    {"init", upcycle::cmd_init, "write a randomly initialised model of a given shape"},
    {"forward", upcycle::cmd_forward, "the logits of a token sequence (f32, CPU) as raw float32"},
    {"bench", upcycle::cmd_bench, "sgemm ceiling, forward and training throughput (dense and MoE)"},
    {"tune", upcycle::cmd_tune, "instruction-tune a dense or MoE model (AdamW, resumable checkpoints)", true},
    {"convert", upcycle::cmd_convert, "dense checkpoints into a Mixtral MoE (UpIT, sparse, drop, btx)"},
    {"run", upcycle::cmd_run, "the whole UpIT pipeline from a JSON config, resumable stage by stage"},
    {"eval", upcycle::cmd_eval, "loss and perplexity, exact-match or multiple-choice accuracy on a data set"},
    {"generate", upcycle::cmd_generate, "text from a model (KV-cached; greedy or sampled; --chat)"},
    {"data", upcycle::cmd_data, "synthetic instruction data (data synth)"},
    {"demo", upcycle::cmd_demo, "UpIT against sparse upcycling and dense, end to end on synthetic data, with a report"},
    {"sweep", upcycle::cmd_sweep, "experiments over expert counts x data sizes x methods, resumable, with plots"},
};

void print_help() {
  std::printf(
      "upcycle %s: dense checkpoints into Mixture-of-Experts models (UpIT)\n\n"
      "Usage: upcycle COMMAND [OPTIONS]   (upcycle COMMAND --help for each)\n\nCommands:\n",
      upcycle::kVersion);
  for (const auto& c : kCommands) std::printf("  %-10s %s\n", c.name, c.summary);
  std::printf("\nOptions:\n  --version  the version, the compiled backends and whether MPI is in\n  --help     this help\n");
}

// The command on the processes this one was started among (a rank of mpirun's, or alone), its
// errors as messages and exit codes; a rank other than the first logs its errors alone.
int run(const Entry& cmd, int argc, char** argv) {
  try {
    upcycle::open_processes(&argc, &argv);
    upcycle::Communicator& processes = upcycle::processes();
    if (processes.size() > 1) {
      if (!cmd.parallel)
        throw upcycle::UsageError(fmt::format("runs as one process, and it was launched as {} (mpirun -np N): only "
                                              "tune runs across processes",
                                              processes.size()));
      if (processes.rank() > 0) spdlog::set_level(spdlog::level::err);
      spdlog::set_pattern(fmt::format("[%H:%M:%S] [rank {}] %^%l%$ %v", processes.rank()));
    }
    return cmd.run(upcycle::Args(argv + 2, argv + argc));
  } catch (const upcycle::UsageError& e) {
    std::fprintf(stderr, "upcycle %s: %s\nTry 'upcycle %s --help'.\n", cmd.name, e.what(), cmd.name);
    return 1;
  } catch (const upcycle::OptionError& e) {  // an option found wrong once the model is known
    std::fprintf(stderr, "upcycle %s: %s\nTry 'upcycle %s --help'.\n", cmd.name,
                 upcycle::render_option_names(e.what(), true).c_str(), cmd.name);
    return 1;
  } catch (const upcycle::InputError& e) {
    std::fprintf(stderr, "upcycle %s: error: %s\n", cmd.name, e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "upcycle %s: error: out of memory\n", cmd.name);
    return 2;
  } catch (const upcycle::PeerError& e) {
    std::fprintf(stderr, "upcycle %s: error: %s\n", cmd.name, e.what());
    return 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "upcycle %s: error: %s\n", cmd.name, e.what());
    return 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
#ifdef __GLIBC__
  // Tensors of tens of MB are allocated and freed one after another (conversion, the expert
  // search, every forward's activations). glibc maps every block over 32 MB afresh, and gives the
  // heap's free top back past the trim threshold, so their pages were faulted in and zeroed again
  // each time: a large share of the search's time, and 21% of an MoE forward's (perf, upcycle
  // bench) while a step's activations, over 1 GB, were still trimmed. From the heap, and never
  // trimmed, they are reused: the process keeps its peak, which it reaches again each step anyway.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);
#endif
  // Logs and progress on stderr: stdout carries results (--json, token ids) for scripts.
  spdlog::set_default_logger(spdlog::stderr_color_mt("upcycle"));
  spdlog::set_pattern("[%H:%M:%S] %^%l%$ %v");
  if (const char* level = std::getenv("UPCYCLE_LOG")) spdlog::set_level(spdlog::level::from_str(level));
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    print_help();
    return argc < 2 ? 1 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("upcycle %s\nbackends: %s\nprocesses: %s\n", upcycle::kVersion, upcycle::kBackends,
                upcycle::have_mpi() ? "MPI (mpirun -np N upcycle tune)" : "one (built without MPI)");
    return 0;
  }
  const Entry* cmd = nullptr;
  for (const auto& c : kCommands)
    if (!std::strcmp(argv[1], c.name)) cmd = &c;
  if (!cmd) {
    std::fprintf(stderr, "upcycle: unknown command '%s' (see upcycle --help)\n", argv[1]);
    return 1;
  }
  upcycle::register_cuda_device();
  const int code = run(*cmd, argc, argv);
  upcycle::close_processes(code);
  return code;
}

// `upcycle data SUBCOMMAND`: instruction data made here. `data synth` writes synthetic tasks with
// exact answers (data/synthetic_tasks.hpp) as Alpaca JSONL with a "task" on every line.
#include <cstdio>
#include <stdexcept>

#include "core/error.hpp"
#include "data/synthetic_tasks.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"

namespace upcycle {

namespace {

constexpr const char* kDataUsage =
    "Usage: upcycle data SUBCOMMAND [OPTIONS]   (upcycle data SUBCOMMAND --help for each)\n\n"
    "Subcommands:\n"
    "  synth  synthetic instruction data with exact answers (Alpaca JSONL)\n";

// "a,b,c" as names; UsageError for an empty name.
std::vector<std::string> split_tasks(const std::string& text) {
  std::vector<std::string> out;
  for (size_t begin = 0;;) {
    const size_t end = std::min(text.find(',', begin), text.size());
    out.push_back(text.substr(begin, end - begin));
    if (out.back().empty()) throw UsageError("--tasks: '" + text + "' holds an empty task name");
    if (end == text.size()) return out;
    begin = end + 1;
  }
}

// Every family with its split and one example.
void print_families() {
  for (const bool heldout : {false, true}) {
    const SynthSplit split = heldout ? SynthSplit::HeldoutTasks : SynthSplit::Train;
    for (const auto& name : synth_families(heldout)) {
      const SynthSample s = synth_samples({1, 0, split, {name}}).front();
      std::printf("%-13s %-8s %s | %s -> %s\n", name.c_str(), heldout ? "held-out" : "train", s.instruction.c_str(),
                  s.input.c_str(), s.output.c_str());
    }
  }
}

int synth(const Args& args) {
  cli::Spec spec;
  spec.usage =
      "upcycle data synth --n N --out OUT.jsonl [--tasks A,B] [--split SPLIT] [--seed S] [--overwrite]\n"
      "       upcycle data synth --list";
  spec.summary =
      "Writes N synthetic instruction samples with exact answers as JSON lines {\"instruction\", \"input\",\n"
      "\"output\", \"task\"} (Alpaca form, read by tune and eval). Families: arithmetic, reversing, sorting,\n"
      "counting, case, list items, comparisons (--list shows each with an example), with four phrasings\n"
      "each. Splits: train and test use the first three phrasings of the training families (from different\n"
      "random streams); heldout-phrasings the fourth phrasing only; heldout-tasks the held-out families.\n"
      "The families take turns, so each gets N / families samples. A seed gives byte-identical files.";
  spec.options.add_options()
      ("n", cli::po::value<int64_t>(), "the number of samples")
      ("out", cli::po::value<std::string>(), "output JSONL file")
      ("tasks", cli::po::value<std::string>(), "comma-separated families (default: every family of the split)")
      ("split", cli::po::value<std::string>()->default_value("train"), "train, test, heldout-phrasings or heldout-tasks")
      ("seed", cli::po::value<uint64_t>()->default_value(0), "random seed")
      ("overwrite", "replace OUT if it exists")
      ("list", "print the families with their split and an example, and stop");
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  if (vm->count("list")) {
    print_families();
    return 0;
  }
  if (!vm->count("n") || !vm->count("out")) throw UsageError("give --n and --out (or --list)");

  SynthOptions opts;
  opts.n = (*vm)["n"].as<int64_t>();
  if (opts.n < 1) throw UsageError("--n must be positive");
  opts.seed = (*vm)["seed"].as<uint64_t>();
  const std::string split = (*vm)["split"].as<std::string>();
  const auto parsed = parse_synth_split(split);
  if (!parsed) throw UsageError("--split: '" + split + "' is not train, test, heldout-phrasings or heldout-tasks");
  opts.split = *parsed;
  if (vm->count("tasks")) opts.tasks = split_tasks((*vm)["tasks"].as<std::string>());
  try {
    write_synthetic_data(opts, (*vm)["out"].as<std::string>(), vm->count("overwrite") > 0);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--tasks: ") + e.what());
  }
  return 0;
}

}  // namespace

int cmd_data(const Args& args) {
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::printf("%s", kDataUsage);
    return 0;
  }
  if (args.empty()) throw UsageError("no subcommand given (subcommands: synth)");
  if (args[0] == "synth") return synth(Args(args.begin() + 1, args.end()));
  throw UsageError("unknown subcommand '" + args[0] + "' (subcommands: synth)");
}

}  // namespace upcycle

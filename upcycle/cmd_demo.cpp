// `upcycle demo`: the whole UpIT pipeline from nothing, on data of our own (experiments/demo.hpp).
#include "experiments/demo.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"

namespace upcycle {

int cmd_demo(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle demo [--out DIR] [--model PATH] [options]";
  spec.summary =
      "Runs UpIT end to end on synthetic instruction data and compares it with sparse upcycling and\n"
      "the dense model at equal data and steps, into DIR (default runs/demo):\n"
      "  data/      train, test and held-out (phrasings, tasks) JSONL from `upcycle data synth`\n"
      "  init/      a new dense model (the `demo` preset, a byte tokenizer), or --model\n"
      "  base/      its first tuning (--base-steps), standing in for pretraining\n"
      "  dense-run/ the instruction tuning that saves the intermediate checkpoints UpIT merges\n"
      "  dense/ sparse/ upit/  each method's model (init/ for the MoEs), tuning (tuned/), evaluations\n"
      "  report.md, metrics.csv, plots/  the results table, in words, and plots\n"
      "Finished stages are skipped when run again, so an interrupted demo continues; --overwrite starts\n"
      "afresh. The defaults take about 12 minutes on two cores.";
  cli::add_options(spec, demo_option_table());
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  DemoOptions o;
  cli::read_options(*vm, demo_option_table(), o, check_demo_options);
  run_demo(o);
  return 0;
}

}  // namespace upcycle

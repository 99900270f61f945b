// `upcycle sweep`: experiments over a grid of expert counts, training-data sizes and methods
// (experiments/sweep.hpp).
#include "experiments/methods.hpp"
#include "experiments/sweep.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"

namespace upcycle {

int cmd_sweep(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle sweep [--experts 2,4,8] [--data 1000,5000,20000] [--methods dense,sparse,upit] [--repeats R] [--out DIR]";
  spec.summary =
      "Runs the demo's experiment (a base tuning per repeat on data of its own, standing in for\n"
      "pretraining; a dense run saving checkpoints; then each method tuned on the same\n"
      "data and evaluated) for every cell of a grid: training-data size x repeat x method x expert\n"
      "count (dense has none). Data of each size and repeat comes from `upcycle data synth` (seed +\n"
      "repeat); the test set is shared. The dense run of a data size and repeat is shared by its\n"
      "cells. Tuning is by epochs, so more data is more steps. Writes DIR/sweep.csv (a row per\n"
      "cell), DIR/summary.csv (means with 95% t intervals over repeats), DIR/pairs.csv (paired\n"
      "differences of methods on the same seeds), DIR/plots/ and DIR/report.md. Finished cells\n"
      "are skipped when run again, so an interrupted sweep continues.\n\n"
      "Methods (--methods), the baselines and UpIT's ablations:\n" +
      experiment_methods_help();
  cli::add_options(spec, sweep_option_table());
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  SweepOptions o;
  cli::read_options(*vm, sweep_option_table(), o, check_sweep_options);
  run_sweep(o);
  return 0;
}

}  // namespace upcycle

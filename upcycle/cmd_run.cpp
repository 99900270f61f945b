// `upcycle run CONFIG.json`: the whole UpIT pipeline from one file (experiments/run_pipeline.hpp).
#include "experiments/run_pipeline.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"

namespace upcycle {

int cmd_run(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle run CONFIG.json";
  spec.summary =
      "Runs the UpIT pipeline a JSON config describes, stage by stage, into its \"out\" folder:\n"
      "  dense    `tune` of the dense model, saving intermediate checkpoints (save_every)\n"
      "  convert  `convert` of those checkpoints (every step-N/ and final/) into an MoE\n"
      "  moe      `tune` of the MoE\n"
      "  eval     `eval` of the dense and the MoE model on each entry of a list\n"
      "Each stage's object holds its command's options, underscores for dashes ({\"save_every\": 25}\n"
      "is --save-every 25; true is a flag; a list gives several values). The top level gives \"out\",\n"
      "and \"seed\" and \"template\" for every stage that does not set its own; \"data\" flows from\n"
      "dense to the later stages. Every stage's options are checked before the first stage runs.\n"
      "Paths are relative to the current folder. Finished stages are skipped when run again and an\n"
      "interrupted tuning resumes from its latest checkpoint, so an interrupted run continues where\n"
      "it stopped. out/run.json gathers the evaluation results.";
  spec.options.add_options()("config", cli::po::value<std::string>()->required(), "the pipeline's JSON");
  spec.positional.add("config", 1);
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  run_pipeline((*vm)["config"].as<std::string>());
  return 0;
}

}  // namespace upcycle

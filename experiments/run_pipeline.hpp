// `upcycle run CONFIG.json` as a function: the UpIT pipeline a JSON config describes, stage by
// stage, into its "out" folder:
//   dense    tuning of the dense model, saving intermediate checkpoints (save_every, save_count)
//   convert  conversion of those checkpoints (every step-N/ and final/) into an MoE
//   moe      tuning of the MoE
//   eval     evaluation of the dense and the MoE model on each entry of a list
// Each stage's object holds the options of the command of the same name (tune, convert, tune,
// eval), keyed as on the command line with underscores for dashes ({"save_every": 25}). The top
// level gives "out", and "seed" and "template" for every stage that does not set its own; "data"
// flows from dense to the later stages. Every stage's options are read and checked before the
// first stage runs. Finished stages are skipped when run again and an interrupted tuning resumes
// from its latest checkpoint. out/run.json gathers the evaluation results.
#pragma once
#include <filesystem>

namespace upcycle {

// UsageError naming the config, the stage and the key for a bad option; InputError for a config
// that is not an object with "out" and the stages, and whatever the stages raise.
void run_pipeline(const std::filesystem::path& config);

}  // namespace upcycle

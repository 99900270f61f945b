// One comparison of upcycling methods on one data set, the unit `demo` and `sweep` are made of:
// a dense instruction-tuning run saving intermediate checkpoints (shared by every method and
// expert count on the same data), then per method a model built from it and tuned for the same
// steps on the same data, and evaluated alike:
//   dense   the dense run's final model, tuned further (the baseline without experts)
//   sparse  sparse upcycling: every expert a copy of the final FFN, random router
//   upit    UpIT: the checkpoints' FFNs plus merged children, routers pre-optimised on seed data
//   btx, drop: the other baselines of `convert`; upit-no-router and the other ablations
//   (experiments/methods.hpp has the table)
// With LoRA experts (dense_tune.lora.rank > 0) the dense run trains an adapter on the model it
// starts from, which stays frozen; its adapters are the pool, the MoEs LoRA-MoEs over that model
// (convert --adapters), and every later stage is that model with an adapter folder.
// Every stage is skipped when its result exists, so an interrupted experiment resumes. The base
// and dense runs, which experiments run at once may share, run under a lock beside their folder.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "convert/convert.hpp"
#include "core/checkpoint.hpp"
#include "formats/peft_adapter.hpp"
#include "report/method_result.hpp"
#include "trainer/evaluation.hpp"
#include "trainer/train.hpp"

namespace upcycle {

inline constexpr int64_t kExperimentSeqLen = 256;  // the synthetic samples are under 100 bytes

// A tuning's length: steps, or epochs when steps is 0.
struct TuneLength {
  int64_t steps = 0;
  double epochs = 0;
};

// Options of a tune stage: `length`, peak lr after `warmup` steps, a cosine to a tenth of it,
// micro-batches of batch_tokens (model, data, out and seed are the experiment's to set).
TrainOptions tune_options(TuneLength length, double lr, int64_t warmup, int64_t batch_tokens);

// A test set of what the training never showed, for exact match: "phrasings" (the trained tasks
// asked in words never trained on) or "tasks" (task families never trained on).
struct HeldoutSet {
  std::string name;
  std::filesystem::path data;
};

// `data synth`'s two held-out splits in dir (made unless they exist), n samples each.
std::vector<HeldoutSet> synth_heldout_sets(const std::filesystem::path& dir, int64_t n, uint64_t seed);

// Evaluation as experiments run it: short replies (the synthetic answers are), samples of
// kExperimentSeqLen.
EvalOptions experiment_eval_options();

struct ExperimentOptions {
  std::filesystem::path dense_dir;   // the dense run (tune's folder), shared between experiments
  std::filesystem::path out;         // this experiment's folder: one subfolder per method
  std::filesystem::path init;        // the model the dense run starts from (with a tokenizer)
  // Optional: a first tuning of init into base_dir, the dense run then starting from its final
  // model, so that even the first checkpoint is a capable model (as when tuning a pretrained one).
  std::filesystem::path base_dir;
  std::optional<TrainOptions> base_tune;  // none: no base tuning
  uint64_t base_seed = 0;            // its seed (repeats may share one base tuning)
  std::filesystem::path base_train;  // its data (empty: train)
  std::filesystem::path train, test; // instruction data (test: loss and exact match)
  std::vector<HeldoutSet> heldout;   // exact match on each too
  std::vector<std::string> methods;  // names in experiment_methods()
  int experts = 8, top_k = 2;
  // The stages' options; the experiment sets what ties them together (models, data, folders,
  // the seed, and for convert the method, experts and checkpoints).
  TrainOptions dense_tune;           // the dense run (steps, save_count, lr, ...)
  TrainOptions tune;                 // every method's run
  ConvertOptions convert;            // router_epochs, seed_min, ...
  EvalOptions eval = experiment_eval_options();
  uint64_t seed = 0;                 // the dense run's and every method's (data order, search, routers)
};

// Runs what is missing and gathers every method's results, in the order of o.methods.
// The base and dense runs' own wall times are in recorded_seconds().
std::vector<MethodResult> run_experiment(const ExperimentOptions& o);

// Seconds the base or dense run in run_dir took (recorded when it ran), 0 when unknown.
double recorded_seconds(const std::filesystem::path& run_dir);

// Parameters an MoE uses per token: every parameter but the (E − k) unused experts' FFNs.
int64_t active_parameters(const Checkpoint& model);
// The same of an adapter: a LoRA-MoE's, all but (E − k) experts' terms.
int64_t active_adapter_parameters(const LoraAdapter& adapter);

}  // namespace upcycle

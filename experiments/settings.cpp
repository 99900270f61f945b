#include "experiments/settings.hpp"

#include "experiments/stages.hpp"

namespace upcycle {

void check_experiment_settings(const ExperimentSettings& s) {
  for (const auto& [key, value] : {std::pair<const char*, int64_t>{"top_k", s.top_k},
                                   {"test_samples", s.test_samples},
                                   {"checkpoints", s.checkpoints},
                                   {"batch_tokens", s.batch_tokens},
                                   {"seed_samples", s.seed_samples}})
    require_positive(double(value), key);
  require_not_negative(double(s.base_steps), "base_steps");
  require_not_negative(s.aux_loss_coef, "aux_loss_coef");
  for (const auto& [key, value] : {std::pair{"lr", s.lr}, {"tune_lr", s.tune_lr}})
    require_positive(value, key);
}

std::filesystem::path initial_model(const ExperimentSettings& s, const std::filesystem::path& fresh, uint64_t seed) {
  if (s.model) return *s.model;
  init_demo_model(fresh, seed);
  return fresh;
}

void set_experiment_tunings(const ExperimentSettings& s, TuneLength dense_length, TuneLength method_length,
                            ExperimentOptions& o) {
  if (s.base_steps > 0) o.base_tune = tune_options({s.base_steps, 0}, s.lr, s.base_steps / 10, s.batch_tokens);
  o.dense_tune = tune_options(dense_length, s.tune_lr, 10, s.batch_tokens);
  o.dense_tune.save_count = s.checkpoints;
  o.tune = tune_options(method_length, s.tune_lr, 10, s.batch_tokens);
  o.convert.seed_min = s.seed_samples;
  o.convert.aux_loss_coef = s.aux_loss_coef;
}

}  // namespace upcycle

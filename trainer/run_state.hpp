// What a training checkpoint holds besides the weights, and how checkpoints are laid out:
// out/step-NNNNNN/ (or out/final/) is a Hugging Face model folder that every command reads (a
// PEFT adapter folder for a LoRA run, which --adapter reads), plus
// optimizer.safetensors (AdamW's moments) and trainer_state.json (step, data position, seed, and
// with --balance bias the selection bias), so
// that a resumed run continues exactly. Each folder appears complete or not at all.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "core/checkpoint.hpp"
#include "core/dtype.hpp"
#include "trainer/batches.hpp"
#include "trainer/engine.hpp"
#include "trainer/selection_bias.hpp"

namespace upcycle {

inline constexpr const char* kOptimizerFile = "optimizer.safetensors";
inline constexpr const char* kTrainerStateFile = "trainer_state.json";

struct RunState {
  int64_t step = 0;    // optimizer steps done
  DataCursor cursor;   // where the data order stands
  uint64_t seed = 0;
  int64_t samples = 0;  // the data's sample count, to notice other data on resume
  int64_t steps = 0;    // the run's planned steps (its schedule's length)
  SelectionBias selection_bias;  // --balance bias: [L][E]; empty otherwise
};

std::string step_folder_name(int64_t step);  // "step-000042"

// Writes weights (as `dtype`), the engine's optimizer state and the run state into `dir` under a
// temporary name, then renames it into place (replacing an older folder of that name).
void save_checkpoint(const std::filesystem::path& dir, const Checkpoint& weights, DType dtype, Engine& engine,
                     const RunState& state);
// `weights` whose tokenizer_config.json (its own, generated or copied, or a new one) records the
// built-in chat template `format` ("chatml", ...) given by hand, so that later commands' --template
// auto take it (text/model_text.hpp kChosenTemplateKey). InputError for a tokenizer_config.json
// that is not a JSON object.
std::unique_ptr<Checkpoint> with_chosen_template(std::shared_ptr<const Checkpoint> weights, const std::string& format);

// The same for a LoRA run: `dir` is a PEFT adapter folder (A and B as `dtype`) with the state,
// and with `chosen_template` (a template given by hand) a tokenizer_config.json that records it
// alone, for load_chat_encoder's `adapter`.
void save_adapter_checkpoint(const std::filesystem::path& dir, const LoraAdapter& adapter, DType dtype,
                             Engine& engine, const RunState& state,
                             const std::optional<std::string>& chosen_template = std::nullopt);

// InputError naming the file when the state is missing or malformed.
RunState load_run_state(const std::filesystem::path& dir);

// Removes optimizer.safetensors from `dir` (an older checkpoint once a newer one exists).
void drop_optimizer_state(const std::filesystem::path& dir);

}  // namespace upcycle

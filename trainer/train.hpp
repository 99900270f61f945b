// The training loop behind `upcycle tune`: AdamW on fp32 master weights over instruction data,
// gradient accumulation, clipping, a learning-rate schedule, frozen parts or a LoRA adapter on a
// frozen base, checkpoints that resume exactly, a metrics JSONL and progress on the terminal.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "core/dtype.hpp"
#include "core/option_table.hpp"
#include "parallel/processes.hpp"
#include "trainer/engine.hpp"
#include "trainer/ops/adamw.hpp"
#include "trainer/parameters.hpp"
#include "trainer/schedule.hpp"

namespace upcycle {

struct TrainOptions {
  std::filesystem::path model;   // the starting checkpoint (unused with resume)
  std::filesystem::path data;    // instruction JSONL: Alpaca, chat or pre-tokenized (data/instruction_data.hpp)
  std::filesystem::path out;     // run folder: step-NNNNNN/, final/, metrics.jsonl
  std::optional<std::filesystem::path> resume;  // a step folder of an earlier run with this out
  std::optional<std::filesystem::path> tokenizer;  // for text data; default: the model's own
  std::string chat_template = "auto";            // "auto" (the model's), chatml, llama2 or alpaca
  std::optional<std::filesystem::path> val_data;  // validation set, or
  double val_fraction = 0;                         // a seeded fraction of data held out (0: none)
  int64_t eval_every = 0;                          // validation loss every N steps (and at the end)

  int64_t steps = 0;         // optimizer steps of the whole run (the schedule's length), or
  double epochs = 0;         // with steps 0: passes over the data (epoch 0's micro-batches / grad_accum)
  int64_t stop_at = 0;       // stop (with a checkpoint) after this step; 0: run to `steps`
  std::optional<int64_t> seq_len;  // longer samples are cut; default: model_seq_len
  int64_t batch_tokens = 4096;  // tokens per micro-batch (whole samples; at least one)
  int64_t grad_accum = 1;       // micro-batches per step
  LrSchedule schedule{.peak = 2e-5};  // total is set from steps
  ops::AdamWConfig adam;        // lr comes from the schedule
  double clip = 1.0;            // global gradient norm; 0: none
  double z_loss_coef = 0;
  std::optional<double> aux_loss_coef;  // overrides the config's router_aux_loss_coef
  AuxLoss aux_loss = AuxLoss::PerLayer;  // how the load-balancing loss counts layers
  Balance balance = Balance::Loss;       // bias: no load-balancing loss, a selection bias instead
  double bias_rate = 1e-3;               // --balance bias: the bias's step per optimizer step
  PartSet frozen;
  // LoRA (rank > 0): an adapter trains on the frozen base (alpha 0: the rank; no targets: every
  // module the base has); or it starts from the PEFT adapter folder `adapter`, whose config rules.
  LoraConfig lora;
  std::optional<std::filesystem::path> adapter;
  int64_t save_every = 0;            // 0: only the final (or stop) checkpoint
  int64_t save_count = 0;            // > 0: this many instead, evenly over the run (final included)
  bool keep_all_states = false;      // optimizer state in every checkpoint, not just the latest
  DType save_dtype = DType::F32;     // f32 resumes exactly; bf16/f16 halve the files
  uint64_t seed = 0;
  bool skip_bad = false;
  bool overwrite = false;            // an existing out/final may be replaced
  int64_t log_every = 1;
  std::optional<std::filesystem::path> tensorboard;  // also write the metrics as TensorBoard events here
  std::string device = "cpu";        // where it runs (engine_for_device)
  std::string precision;             // f32 (the CPU's) or bf16 (the GPU's); empty: the device's
  bool recompute = false;            // LossOptions::recompute: one layer's activations held (CPU)
  int64_t timeout = kPeerTimeout.count();  // seconds a process waits on another
  bool shard_optimizer = false;      // several processes: AdamW's moments sharded (AdamW::spread)
};

struct TrainResult {
  int64_t steps = 0;       // the last step done
  double last_loss = 0;
  std::filesystem::path checkpoint;  // the last one written
};

// The options as `tune` and a run config's tuning stages take them (core/option_table.hpp).
const OptionTable<TrainOptions>& train_option_table();
// OptionError for values out of range or options that do not go together (model, data and out
// are required here; model may come from resume instead).
void check_train_options(const TrainOptions& o);

// InputError for bad data or checkpoints; std::runtime_error naming the step when the loss or
// the gradient is not finite (the checkpoints written before stay as they were). The model runs
// on the engine `make` gives (by default that of opts.device). Launched as several processes
// (parallel/processes.hpp), each takes an equal share of every step's micro-batches, the
// gradients are summed over them in rank order and each takes the same AdamW step; the first
// alone logs and writes.
TrainResult train(const TrainOptions& opts, EngineFactory make = nullptr);

}  // namespace upcycle

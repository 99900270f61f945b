// `tune`'s options as a table, and their checks (trainer/train.hpp).
#include "core/error.hpp"
#include "text/chat_template.hpp"
#include "trainer/batches.hpp"
#include "trainer/lora_init.hpp"
#include "trainer/train.hpp"

namespace upcycle {

namespace {

using O = TrainOptions;

OptionTable<O> make_table() {
  return {
      option<O>("model", "starting checkpoint (folder, .h5 or .gguf)", [](O& o) -> auto& { return o.model; }),
      option<O>("data", "instruction JSONL (Alpaca, chat or pre-tokenized)", [](O& o) -> auto& { return o.data; }),
      option<O>("tokenizer", "tokenizer for text data (default: the model's)", [](O& o) -> auto& { return o.tokenizer; }),
      option<O>("template", "chat template for text data: auto (the model's), " + chat_format_choices(),
                [](O& o) -> auto& { return o.chat_template; }),
      option<O>("val_data", "validation JSONL: its loss is logged to metrics.jsonl", [](O& o) -> auto& { return o.val_data; }),
      option<O>("val_fraction", "hold out this seeded share of --data instead", [](O& o) -> auto& { return o.val_fraction; }),
      option<O>("eval_every", "validation loss every N steps (always at the end)", [](O& o) -> auto& { return o.eval_every; }),
      option<O>("out", "run folder", [](O& o) -> auto& { return o.out; }),
      option<O>("steps", "optimizer steps (the schedule's length)", [](O& o) -> auto& { return o.steps; }),
      option<O>("epochs", "passes over the data, converted to steps", [](O& o) -> auto& { return o.epochs; }),
      option<O>("lr", "peak learning rate", [](O& o) -> auto& { return o.schedule.peak; }),
      text_option<O>("schedule", "cosine, linear or constant after warmup", [](O& o) -> auto& { return o.schedule.kind; },
                     as_option("schedule", parse_schedule), schedule_name),
      option<O>("warmup", "steps of linear warmup", [](O& o) -> auto& { return o.schedule.warmup; }),
      option<O>("min_lr_ratio", "the decay's floor, as a fraction of --lr", [](O& o) -> auto& { return o.schedule.min_ratio; }),
      option<O>("batch_tokens", "tokens per micro-batch (whole samples)", [](O& o) -> auto& { return o.batch_tokens; }),
      option<O>("seq_len", kSeqLenHelp, [](O& o) -> auto& { return o.seq_len; }),
      option<O>("grad_accum", "micro-batches per optimizer step", [](O& o) -> auto& { return o.grad_accum; }),
      option<O>("weight_decay", "AdamW weight decay (weight matrices only)", [](O& o) -> auto& { return o.adam.weight_decay; }),
      option<O>("beta1", "AdamW beta1", [](O& o) -> auto& { return o.adam.beta1; }),
      option<O>("beta2", "AdamW beta2", [](O& o) -> auto& { return o.adam.beta2; }),
      option<O>("adam_eps", "AdamW epsilon", [](O& o) -> auto& { return o.adam.eps; }),
      option<O>("bf16_moments", "hold AdamW's moments in bf16, rounded stochastically: 12 bytes a trained parameter "
                "instead of 16 (CPU; a fixed seed still gives the same bits)", [](O& o) -> auto& { return o.adam.bf16_moments; }),
      option<O>("clip", "clip the global gradient norm to this; 0: off", [](O& o) -> auto& { return o.clip; }),
      option<O>("aux_loss_coef", "load-balancing coefficient (default: the config's, a LoRA-MoE adapter's router_aux_loss_coef, else 0.01); a LoRA-MoE's folders keep it",
                [](O& o) -> auto& { return o.aux_loss_coef; }),
      text_option<O>("aux_loss",
                     "load balancing per MoE layer (per-layer: Switch, UpIT), over all layers' rows (global: "
                     "transformers' Mixtral), or per layer with f counted over the whole step's micro-batches "
                     "(global-batch: Qwen3-MoE; one more forward pass per micro-batch when --grad-accum > 1)",
                     [](O& o) -> auto& { return o.aux_loss; }, as_option("aux_loss", parse_aux_loss), aux_loss_name),
      text_option<O>("balance",
                     "loss (the load-balancing loss), or bias: no such loss, a per-expert bias added to the router's "
                     "probabilities for the top-k choice only, nudged each step toward even load (DeepSeek-V3)",
                     [](O& o) -> auto& { return o.balance; }, as_option("balance", parse_balance), balance_name),
      option<O>("bias_rate", "--balance bias: the bias's change per step", [](O& o) -> auto& { return o.bias_rate; }),
      option<O>("z_loss_coef", "router z-loss coefficient; 0: off", [](O& o) -> auto& { return o.z_loss_coef; }),
      text_option<O>("freeze", "parts kept fixed: embeddings, attention, norms, router, experts (ffn), comma-separated",
                     [](O& o) -> auto& { return o.frozen; }, as_option("freeze", parse_parts), parts_string,
                     ValueKind::CommaList),
      option<O>("lora_rank", "train a LoRA adapter of this rank on the frozen base instead of the model (CPU or "
                "GPU); checkpoints are PEFT adapter folders", [](O& o) -> auto& { return o.lora.rank; }),
      option<O>("lora_alpha", "LoRA's alpha: the term is scaled by alpha/rank (default: the rank)",
                [](O& o) -> auto& { return o.lora.alpha; }),
      text_option<O>("lora_targets",
                     "the adapted matrices, of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj "
                     "(default: all the base has)",
                     [](O& o) -> auto& { return o.lora.target_modules; },
                     [](const std::string& list) { return parse_lora_targets(list, "lora_targets"); },
                     lora_targets_string, ValueKind::CommaList),
      option<O>("lora_dropout", "dropout on the LoRA terms' inputs while training", [](O& o) -> auto& { return o.lora.dropout; }),
      option<O>("rslora", "scale by alpha/sqrt(rank) (rank-stabilised LoRA)", [](O& o) -> auto& { return o.lora.use_rslora; }),
      option<O>("lora_experts", "a LoRA-MoE of this many experts instead (MixLoRA's: each FFN target an expert's own "
                "LoRA, new experts with B = 0 and a random router, attention targets shared); checkpoints are MixLoRA "
                "folders", [](O& o) -> auto& { return o.lora.experts; }),
      option<O>("lora_top_k", "experts per token of the LoRA-MoE (default 2)", [](O& o) -> auto& { return o.lora.top_k; }),
      option<O>("adapter", "continue training this PEFT LoRA adapter folder (its config gives rank, alpha, targets "
                "and dropout)", [](O& o) -> auto& { return o.adapter; }),
      option<O>("save_every", "write step-NNNNNN/ every N steps", [](O& o) -> auto& { return o.save_every; }),
      option<O>("save_count", "or N checkpoints evenly over the run, final/ included", [](O& o) -> auto& { return o.save_count; }),
      option<O>("keep_states", "keep the optimizer state in every checkpoint (default: the latest only)",
                [](O& o) -> auto& { return o.keep_all_states; }),
      text_option<O>("save_dtype", "checkpoint weights: f32, bf16 or f16", [](O& o) -> auto& { return o.save_dtype; },
                     as_option("save_dtype", parse_storage_dtype), [](DType t) { return std::string(dtype_name(t)); }),
      option<O>("stop_at", "stop after this step with a checkpoint", [](O& o) -> auto& { return o.stop_at; }),
      option<O>("resume", "continue from a checkpoint folder of this run", [](O& o) -> auto& { return o.resume; }),
      option<O>("seed", "data order seed", [](O& o) -> auto& { return o.seed; }),
      option<O>("skip_bad", "skip malformed data lines (counted in the log) instead of failing",
                [](O& o) -> auto& { return o.skip_bad; }),
      option<O>("log_every", "progress line every N steps", [](O& o) -> auto& { return o.log_every; }),
      option<O>("tensorboard", "also write the metrics as TensorBoard event files into this folder",
                [](O& o) -> auto& { return o.tensorboard; }),
      option<O>("overwrite", "start over in a DIR that holds a run", [](O& o) -> auto& { return o.overwrite; }),
      option<O>("device", kDeviceHelp, [](O& o) -> auto& { return o.device; }),
      option<O>("timeout", "seconds a process of a multi-process run (mpirun -np N upcycle tune) waits on another "
                "before the run ends with an error naming it; cover the longest checkpoint save",
                [](O& o) -> auto& { return o.timeout; }),
      option<O>("shard_optimizer", "several processes: each keeps AdamW's moments of its 1/N share of the trained "
                "tensors alone and updates them (ZeRO stage 1); checkpoints hold every moment, as always",
                [](O& o) -> auto& { return o.shard_optimizer; }),
      option<O>("recompute", "keep each layer's input alone and compute the layer again for its gradients: the "
                "memory of one layer's activations instead of every layer's, for one more forward pass, the same "
                "bits (CPU)", [](O& o) -> auto& { return o.recompute; }),
      option<O>("precision", "f32 or bf16 on the CPU (default f32; bf16: every matrix product in bf16 with f32 sums "
                "on oneDNN on a bf16 copy of each trained matrix that AdamW keeps, f32 master weights and AdamW moments), "
                "bf16 on the GPU",
                [](O& o) -> auto& { return o.precision; }),
  };
}

// LoRA's settings: in range, and only where they take effect.
void check_lora_options(const O& o) {
  const LoraConfig& l = o.lora;
  require_not_negative(double(l.rank), "lora_rank");
  if (l.rank > kMaxLoraRank)
    throw OptionError("lora_rank", option_name("lora_rank") + " " + std::to_string(l.rank) + " is above " +
                                       std::to_string(kMaxLoraRank));
  require_not_negative(l.alpha, "lora_alpha");
  if (l.dropout < 0 || l.dropout >= 1)
    throw OptionError("lora_dropout", option_name("lora_dropout") + " must lie in [0, 1)");
  if (l.experts < 0 || l.experts > kMaxLoraExperts)
    throw OptionError("lora_experts", option_name("lora_experts") + " must lie in [1, " +
                                          std::to_string(kMaxLoraExperts) + "]");
  if (l.top_k < 0 || (l.top_k > 0 && l.experts == 0) || l.top_k > l.experts)
    throw OptionError("lora_top_k", option_name("lora_top_k") + " must lie in [1, " + option_name("lora_experts") + "]");
  const bool settings =
      l.alpha != 0 || !l.target_modules.empty() || l.dropout != 0 || l.use_rslora || l.experts != 0 || l.top_k != 0;
  if (o.adapter && (l.rank > 0 || settings))
    throw OptionError("adapter", option_name("adapter") + "'s adapter_config.json gives the LoRA settings: give it "
                                 "without " + option_name("lora_rank") + " and the other LoRA options");
  if (settings && l.rank == 0 && !o.adapter && !o.resume)
    throw OptionError("lora_rank", "the LoRA options need " + option_name("lora_rank"));
  if ((l.rank > 0 || o.adapter) && o.frozen.any())
    throw OptionError("freeze", option_name("freeze") + " does not go with LoRA, which freezes the whole base");
}

}  // namespace

const OptionTable<TrainOptions>& train_option_table() {
  static const OptionTable<TrainOptions> table = make_table();
  return table;
}

void check_train_options(const TrainOptions& o) {
  require_option(!o.data.empty(), "data");
  require_option(!o.out.empty(), "out");
  if (o.val_fraction < 0 || o.val_fraction >= 1) throw OptionError("val_fraction", option_name("val_fraction") + " must lie in [0, 1)");
  if (o.val_data && o.val_fraction > 0)
    throw OptionError("val_data", "give " + option_name("val_data") + " or " + option_name("val_fraction") + ", not both");
  if (o.model.empty() && !o.resume)
    throw OptionError("model", option_name("model") + " is required (unless " + option_name("resume") + " gives the checkpoint)");
  if (o.seq_len && *o.seq_len < 2) throw OptionError("seq_len", option_name("seq_len") + " must be at least 2");
  if (!o.precision.empty() && o.precision != "f32" && o.precision != "bf16")
    throw OptionError("precision", option_name("precision") + ": '" + o.precision + "' is not f32 or bf16");
  if (o.device != "cpu" && o.precision == "f32")
    throw OptionError("precision", option_name("precision") + " f32: training on " + o.device + " computes in bf16");
  require_positive(double(o.batch_tokens), "batch_tokens");
  require_positive(double(o.grad_accum), "grad_accum");
  require_positive(o.schedule.peak, "lr");
  if (o.schedule.warmup < 0 || o.schedule.min_ratio < 0 || o.schedule.min_ratio > 1)
    throw OptionError("warmup", option_name("warmup") + " must be >= 0 and " + option_name("min_lr_ratio") + " in [0, 1]");
  require_positive(o.adam.eps, "adam_eps");
  if (o.adam.beta1 < 0 || o.adam.beta1 >= 1 || o.adam.beta2 < 0 || o.adam.beta2 >= 1)
    throw OptionError("beta1", option_name("beta1") + " and " + option_name("beta2") + " must lie in [0, 1)");
  if (o.save_count < 0 || (o.save_count > 0 && o.save_every > 0))
    throw OptionError("save_count", option_name("save_count") + " must be positive, and given without " + option_name("save_every"));
  require_positive(double(o.log_every), "log_every");
  if (o.timeout < 1 || o.timeout > 1'000'000)
    throw OptionError("timeout", option_name("timeout") + " must lie in [1, 1000000] seconds");
  require_positive(o.bias_rate, "bias_rate");
  require_not_negative(double(o.steps), "steps");
  for (const auto& [key, value] : {std::pair{"stop_at", double(o.stop_at)}, {"save_every", double(o.save_every)},
                                   {"clip", o.clip}, {"z_loss_coef", o.z_loss_coef}, {"weight_decay", o.adam.weight_decay}})
    require_not_negative(value, key);
  if (o.aux_loss_coef) require_not_negative(*o.aux_loss_coef, "aux_loss_coef");
  require_not_negative(o.epochs, "epochs");
  check_lora_options(o);
  if (o.recompute && o.device != "cpu")
    throw OptionError("recompute", option_name("recompute") + " runs on the CPU (not on " + o.device + " yet)");
  if (o.adam.bf16_moments && o.device != "cpu")
    throw OptionError("bf16_moments", option_name("bf16_moments") + " runs on the CPU (not on " + o.device + " yet)");
  if ((o.steps > 0) == (o.epochs > 0))
    throw OptionError("steps", "give exactly one of " + option_name("steps") + " and " + option_name("epochs"));
}

}  // namespace upcycle

// `upcycle tune`: instruction tuning of a dense or MoE model.
#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "trainer/train.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"
#include "upcycle/cuda_plugin.hpp"

namespace upcycle {

namespace {

template <class T>
T positive(const cli::po::variables_map& vm, const char* name) {
  const T v = vm[name].as<T>();
  if (!(v > 0)) throw UsageError(std::string("--") + name + " must be positive");
  return v;
}

TrainOptions options_from(const cli::po::variables_map& vm) {
  TrainOptions o;
  o.data = vm["data"].as<std::string>();
  o.out = vm["out"].as<std::string>();
  if (vm.count("resume")) o.resume = vm["resume"].as<std::string>();
  if (vm.count("tokenizer")) o.tokenizer = vm["tokenizer"].as<std::string>();
  o.chat_template = vm["template"].as<std::string>();
  if (vm.count("val-data")) o.val_data = vm["val-data"].as<std::string>();
  o.val_fraction = vm["val-fraction"].as<double>();
  if (o.val_fraction < 0 || o.val_fraction >= 1) throw UsageError("--val-fraction must lie in [0, 1)");
  if (o.val_data && o.val_fraction > 0) throw UsageError("give --val-data or --val-fraction, not both");
  o.eval_every = vm["eval-every"].as<int64_t>();
  if (vm.count("model")) o.model = vm["model"].as<std::string>();
  else if (!o.resume) throw UsageError("--model is required (unless --resume gives the checkpoint)");
  o.seq_len = positive<int64_t>(vm, "seq-len");
  if (o.seq_len < 2) throw UsageError("--seq-len must be at least 2");
  o.batch_tokens = positive<int64_t>(vm, "batch-tokens");
  o.grad_accum = positive<int64_t>(vm, "grad-accum");
  o.schedule.kind = parse_schedule(vm["schedule"].as<std::string>());
  o.schedule.peak = positive<double>(vm, "lr");
  o.schedule.warmup = vm["warmup"].as<int64_t>();
  o.schedule.min_ratio = vm["min-lr-ratio"].as<double>();
  if (o.schedule.warmup < 0 || o.schedule.min_ratio < 0 || o.schedule.min_ratio > 1)
    throw UsageError("--warmup must be >= 0 and --min-lr-ratio in [0, 1]");
  o.adam.weight_decay = vm["weight-decay"].as<double>();
  o.adam.beta1 = vm["beta1"].as<double>();
  o.adam.beta2 = vm["beta2"].as<double>();
  o.adam.eps = positive<double>(vm, "adam-eps");
  if (o.adam.beta1 < 0 || o.adam.beta1 >= 1 || o.adam.beta2 < 0 || o.adam.beta2 >= 1)
    throw UsageError("--beta1 and --beta2 must lie in [0, 1)");
  o.clip = vm["clip"].as<double>();
  o.z_loss_coef = vm["z-loss-coef"].as<double>();
  if (vm.count("aux-loss-coef")) o.aux_loss_coef = vm["aux-loss-coef"].as<double>();
  o.frozen = parse_parts(vm["freeze"].as<std::string>());
  o.save_every = vm["save-every"].as<int64_t>();
  o.save_count = vm["save-count"].as<int64_t>();
  if (o.save_count < 0 || (o.save_count > 0 && o.save_every > 0))
    throw UsageError("--save-count must be positive, and given without --save-every");
  o.keep_all_states = vm.count("keep-states") > 0;
  o.save_dtype = cli::parse_output_dtype(vm["save-dtype"].as<std::string>(), "--save-dtype");
  o.seed = vm["seed"].as<uint64_t>();
  o.skip_bad = vm.count("skip-bad") > 0;
  o.overwrite = vm.count("overwrite") > 0;
  o.log_every = positive<int64_t>(vm, "log-every");
  o.stop_at = vm["stop-at"].as<int64_t>();
  if (vm.count("steps") == vm.count("epochs")) throw UsageError("give exactly one of --steps and --epochs");
  if (vm.count("steps")) o.steps = positive<int64_t>(vm, "steps");
  else o.epochs = positive<double>(vm, "epochs");
  return o;
}

}  // namespace

int cmd_tune(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle tune --model PATH --data FILE --out DIR (--steps N | --epochs X) [options]";
  spec.summary =
      "Instruction-tunes a dense or MoE model (llama, mistral, qwen2, mixtral) on the CPU: AdamW on\n"
      "fp32 master weights (no weight decay on norms and biases), warmup then a cosine, linear or\n"
      "constant schedule, gradient clipping and accumulation, and for MoE models the load-balancing\n"
      "loss (coef from the config's router_aux_loss_coef) and an optional router z-loss.\n"
      "Data: JSONL, one sample per line, in any of three forms: Alpaca {instruction, input, output},\n"
      "chat {messages: [{role, content}, ...]}, or pre-tokenized {input_ids, labels} (-100: not\n"
      "trained on). Text goes through the model's tokenizer and chat template (ChatML, Llama-2 or\n"
      "Alpaca, recognised from its metadata, or --template), and the loss counts the replies only.\n"
      "Samples are packed whole into micro-batches of --batch-tokens, masked from each other, in a\n"
      "seeded order; --val-fraction holds out a seeded share for a validation loss.\n"
      "DIR gets metrics.jsonl (one line per step), step-NNNNNN/ every --save-every steps, and final/\n"
      "at the end: Hugging Face folders any command reads, with the optimizer and data state that\n"
      "--resume DIR/step-NNNNNN needs to continue exactly as a straight run would (f32 checkpoints).";
  spec.options.add_options()
      ("model", cli::po::value<std::string>(), "starting checkpoint (folder, .h5 or .gguf)")
      ("data", cli::po::value<std::string>()->required(), "instruction JSONL (Alpaca, chat or pre-tokenized)")
      ("tokenizer", cli::po::value<std::string>(), "tokenizer for text data (default: the model's)")
      ("template", cli::po::value<std::string>()->default_value("auto"),
       "chat template for text data: auto (the model's), chatml, llama2 or alpaca")
      ("val-data", cli::po::value<std::string>(), "validation JSONL: its loss is logged to metrics.jsonl")
      ("val-fraction", cli::po::value<double>()->default_value(0.0), "hold out this seeded share of --data instead")
      ("eval-every", cli::po::value<int64_t>()->default_value(0), "validation loss every N steps (always at the end)")
      ("out", cli::po::value<std::string>()->required(), "run folder")
      ("steps", cli::po::value<int64_t>(), "optimizer steps (the schedule's length)")
      ("epochs", cli::po::value<double>(), "passes over the data, converted to steps")
      ("lr", cli::po::value<double>()->default_value(2e-5), "peak learning rate")
      ("schedule", cli::po::value<std::string>()->default_value("cosine"), "cosine, linear or constant after warmup")
      ("warmup", cli::po::value<int64_t>()->default_value(0), "steps of linear warmup")
      ("min-lr-ratio", cli::po::value<double>()->default_value(0.0), "the decay's floor, as a fraction of --lr")
      ("batch-tokens", cli::po::value<int64_t>()->default_value(4096), "tokens per micro-batch (whole samples)")
      ("seq-len", cli::po::value<int64_t>()->default_value(2048), "samples longer than this are cut")
      ("grad-accum", cli::po::value<int64_t>()->default_value(1), "micro-batches per optimizer step")
      ("weight-decay", cli::po::value<double>()->default_value(0.0), "AdamW weight decay (weight matrices only)")
      ("beta1", cli::po::value<double>()->default_value(0.9), "AdamW beta1")
      ("beta2", cli::po::value<double>()->default_value(0.999), "AdamW beta2")
      ("adam-eps", cli::po::value<double>()->default_value(1e-8), "AdamW epsilon")
      ("clip", cli::po::value<double>()->default_value(1.0), "clip the global gradient norm to this; 0: off")
      ("aux-loss-coef", cli::po::value<double>(), "load-balancing coefficient (default: the config's, else 0.01)")
      ("z-loss-coef", cli::po::value<double>()->default_value(0.0), "router z-loss coefficient; 0: off")
      ("freeze", cli::po::value<std::string>()->default_value(""),
       "parts kept fixed: embeddings, attention, norms, router, experts (ffn), comma-separated")
      ("save-every", cli::po::value<int64_t>()->default_value(0), "write step-NNNNNN/ every N steps")
      ("save-count", cli::po::value<int64_t>()->default_value(0), "or N checkpoints evenly over the run, final/ included")
      ("keep-states", "keep the optimizer state in every checkpoint (default: the latest only)")
      ("save-dtype", cli::po::value<std::string>()->default_value("f32"), "checkpoint weights: f32, bf16 or f16")
      ("stop-at", cli::po::value<int64_t>()->default_value(0), "stop after this step with a checkpoint")
      ("resume", cli::po::value<std::string>(), "continue from a checkpoint folder of this run")
      ("seed", cli::po::value<uint64_t>()->default_value(0), "data order seed")
      ("skip-bad", "skip malformed data lines (counted in the log) instead of failing")
      ("log-every", cli::po::value<int64_t>()->default_value(1), "progress line every N steps")
      ("overwrite", "start over in a DIR that holds a run")
      ("device", cli::po::value<std::string>()->default_value("cpu"), kDeviceHelp);
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  const EngineFactory engine = engine_for_device((*vm)["device"].as<std::string>());
  const TrainResult r = train(options_from(*vm), engine);
  spdlog::info("done: step {}, loss {:.4f}, checkpoint {}", r.steps, r.last_loss, r.checkpoint.string());
  return 0;
}

}  // namespace upcycle

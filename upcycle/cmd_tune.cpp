// `upcycle tune`: instruction tuning of a dense or MoE model.
#include <spdlog/spdlog.h>

#include "trainer/train.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"

namespace upcycle {

int cmd_tune(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle tune --model PATH --data FILE --out DIR (--steps N | --epochs X) [options]";
  spec.summary =
      "Instruction-tunes a dense or MoE model (llama, mistral, qwen2, qwen3, mixtral, qwen2_moe,\n"
      "qwen3_moe) on the CPU: AdamW on fp32 master weights (no weight decay on norms and biases), warmup then a cosine,\n"
      "linear or constant schedule, gradient clipping and accumulation, and for MoE models the load-balancing\n"
      "loss (coef from the config's router_aux_loss_coef; per MoE layer, or --aux-loss global) and an\n"
      "optional router z-loss.\n"
      "Data: JSONL, one sample per line, in any of three forms: Alpaca {instruction, input, output},\n"
      "chat {messages: [{role, content}, ...]}, or pre-tokenized {input_ids, labels} (-100: not\n"
      "trained on). Text goes through the model's tokenizer and chat template (ChatML, Llama-2 or\n"
      "Alpaca, recognised from its metadata, or --template), and the loss counts the replies only.\n"
      "Samples are packed whole into micro-batches of --batch-tokens, masked from each other, in a\n"
      "seeded order; --val-fraction holds out a seeded share for a validation loss.\n"
      "DIR gets metrics.jsonl (one line per step), step-NNNNNN/ every --save-every steps, and final/\n"
      "at the end: Hugging Face folders any command reads, with the optimizer and data state that\n"
      "--resume DIR/step-NNNNNN needs to continue exactly as a straight run would (f32 checkpoints).\n"
      "LoRA: --lora-rank R trains a LoRA adapter (PEFT's A and B, alpha/r scaling or --rslora,\n"
      "--lora-dropout) on the base, which stays frozen as stored (a bf16 base is never widened), and\n"
      "the checkpoints are PEFT adapter folders (adapter_config.json, adapter_model.safetensors) that\n"
      "PEFT and --adapter read; --adapter DIR continues an adapter. A resumed LoRA run takes --model,\n"
      "its base. --lora-experts E makes it a LoRA-MoE (MixLoRA's): per layer a router over E experts\n"
      "(top --lora-top-k, default 2), each the base FFN with its own LoRA on the FFN targets (B = 0 at\n"
      "the start), the attention targets shared; the routers train too, and the checkpoints are\n"
      "MixLoRA folders (export --merge-adapter writes its Mixtral). On --device cuda the base is held in\n"
      "bf16 on the GPU, A, B (and the routers' masters) in fp32, trained by the GPU's AdamW; the folders\n"
      "and the optimizer state are the CPU's, so a run resumes on either device.\n"
      "Several processes: `mpirun -np N upcycle tune ...` (or srun) shares each step's --grad-accum\n"
      "micro-batches (a multiple of N) among N processes, which sum their gradients in rank order and take the\n"
      "same step: the run N = 1 would make within rounding, the same bits at the same N. The first\n"
      "process alone logs and writes; a run resumes at any N; a process silent for --timeout seconds\n"
      "ends the run (exit 3) naming it.";
  cli::add_options(spec, train_option_table());
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  TrainOptions o;
  cli::read_options(*vm, train_option_table(), o, check_train_options);
  const TrainResult r = train(o);
  spdlog::info("done: step {}, loss {:.4f}, checkpoint {}", r.steps, r.last_loss, r.checkpoint.string());
  return 0;
}

}  // namespace upcycle

// `upcycle export IN OUT`: any readable checkpoint to a Hugging Face folder, HDF5 or GGUF, streamed.
#include <chrono>

#include <spdlog/spdlog.h>

#include "core/checkpoint.hpp"
#include "core/error.hpp"
#include "core/progress.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/open_checkpoint.hpp"
#include "trainer/stored_weights.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"

namespace upcycle {

int cmd_export(const Args& args) {
  cli::Spec spec;
  spec.usage =
      "upcycle export IN OUT [--dtype f32|bf16|f16|q8_0] [--shard-size SIZE] [--merge-adapter DIR] [--overwrite]";
  spec.summary =
      "Converts a checkpoint (Hugging Face folder, .h5 or .gguf) to a Hugging Face folder (OUT a folder),\n"
      "to HDF5 (OUT ending in .h5) or to llama.cpp's GGUF (OUT ending in .gguf), tensor by tensor, so\n"
      "memory stays near one tensor whatever the model's size. GGUF's quantized tensors are dequantized.\n"
      "The output appears under its name only when complete. f32 to f32 is bit exact.\n"
      "GGUF output: llama, mistral and mixtral as llama.cpp's llama architecture (q/k rows in its order,\n"
      "experts stacked per layer), qwen2, and qwen2_moe as qwen2moe, with the tokenizer's vocabulary,\n"
      "merges and chat template, so llama.cpp runs the file as it is; vectors and routers in f32, the\n"
      "matrices in --dtype (q8_0: llama.cpp's Q8_0, bit for bit; f16 for rows that are not whole blocks).\n"
      "--merge-adapter writes the model with a PEFT LoRA adapter merged into its matrices (W + scale x\n"
      "B x A, in f32; the other tensors as stored), Hugging Face names; a MixLoRA adapter (tune --lora-experts) gives the Mixtral whose expert e has W + scale x B_e x A_e.";
  spec.options.add_options()
      ("dtype", cli::po::value<std::string>(), "convert every tensor to f32, bf16 or f16, or a GGUF's matrices also to q8_0 (default: keep each tensor's; quantized become f32)")
      ("shard-size", cli::po::value<std::string>()->default_value("5GB"), "largest safetensors shard (like 5GB, 500MB, 2GiB)")
      ("merge-adapter", cli::po::value<std::string>(), "a PEFT LoRA (or MixLoRA) adapter folder of IN to merge into its weights")
      ("overwrite", "replace OUT if it exists")
      ("quiet,q", "no progress output");
  spec.hidden.add_options()
      ("in", cli::po::value<std::string>()->required(), "input")
      ("out", cli::po::value<std::string>()->required(), "output");
  spec.positional.add("in", 1).add("out", 1);
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;

  WriteOptions opts;
  const std::filesystem::path in = (*vm)["in"].as<std::string>(), out = (*vm)["out"].as<std::string>();
  if (vm->count("dtype")) {
    const std::string dtype = (*vm)["dtype"].as<std::string>();
    const bool gguf = out.extension() == ".gguf";
    if (dtype == "q8_0" && !gguf) throw UsageError("--dtype q8_0: only GGUF outputs (OUT ending in .gguf) hold it");
    if (dtype == "q8_0") {
      opts.dtype = DType::Q8_0;
    } else {
      try {
        opts.dtype = parse_storage_dtype(dtype);
      } catch (const UsageError&) {
        throw UsageError("--dtype: '" + dtype + "' is not one of f32, bf16, f16" + (gguf ? ", q8_0" : ""));
      }
    }
  }
  opts.shard_bytes = cli::parse_size((*vm)["shard-size"].as<std::string>(), "shard-size");
  opts.overwrite = vm->count("overwrite") > 0;
  opts.progress = vm->count("quiet") == 0;

  auto start = std::chrono::steady_clock::now();
  const std::unique_ptr<Checkpoint> base = open_checkpoint(in);
  const std::unique_ptr<Checkpoint> merged =
      vm->count("merge-adapter") ? merge_adapter(*base, (*vm)["merge-adapter"].as<std::string>()) : nullptr;
  const Checkpoint* ckpt = merged ? merged.get() : base.get();
  write_checkpoint(*ckpt, out, opts);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  spdlog::info("exported {} tensors ({} parameters) from {} to {} in {}", ckpt->tensors().size(),
               ckpt->parameter_count(), in.string(), out.string(), format_duration(secs));
  return 0;
}

}  // namespace upcycle

// `upcycle export IN OUT`: any readable checkpoint to a Hugging Face folder or HDF5, streamed.
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
  spec.usage = "upcycle export IN OUT [--dtype f32|bf16|f16] [--shard-size SIZE] [--merge-adapter DIR] [--overwrite]";
  spec.summary =
      "Converts a checkpoint (Hugging Face folder, .h5 or .gguf) to a Hugging Face folder (OUT a folder)\n"
      "or to HDF5 (OUT ending in .h5), tensor by tensor, so memory stays near one tensor whatever the\n"
      "model's size. GGUF's quantized tensors are dequantized. The output appears under its name only\n"
      "when complete. f32 to f32 is bit exact. --merge-adapter writes the model with a PEFT LoRA adapter\n"
      "merged into its matrices (W + scale x B x A, in f32; the other tensors as stored), Hugging Face names;\n"
      "a MixLoRA adapter (tune --lora-experts) gives the Mixtral whose expert e has W + scale x B_e x A_e.";
  spec.options.add_options()
      ("dtype", cli::po::value<std::string>(), "convert every tensor to f32, bf16 or f16 (default: keep each tensor's; quantized become f32)")
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
  if (vm->count("dtype")) opts.dtype = cli::parse_output_dtype((*vm)["dtype"].as<std::string>(), "dtype");
  opts.shard_bytes = cli::parse_size((*vm)["shard-size"].as<std::string>(), "shard-size");
  opts.overwrite = vm->count("overwrite") > 0;
  opts.progress = vm->count("quiet") == 0;

  const std::filesystem::path in = (*vm)["in"].as<std::string>(), out = (*vm)["out"].as<std::string>();
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

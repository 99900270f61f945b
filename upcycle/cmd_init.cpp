// `upcycle init`: a randomly initialised model of a given shape, written like any export.
#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/model_presets.hpp"
#include "formats/random_init.hpp"
#include "text/byte_tokenizer.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"

namespace upcycle {

namespace {

ModelConfig config_from_options(const cli::po::variables_map& vm) {
  const bool has_config = vm.count("config"), has_preset = vm.count("preset");
  if (has_config == has_preset) throw UsageError("give exactly one of --config and --preset");
  if (has_config) return ModelConfig::load(vm["config"].as<std::string>());
  const std::string name = vm["preset"].as<std::string>();
  auto j = preset_config(name);
  if (!j) {
    std::string known;
    for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
    throw UsageError("--preset: unknown preset '" + name + "' (known: " + known + ")");
  }
  return ModelConfig::from_json(*j, "preset " + name);
}

}  // namespace

int cmd_init(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle init (--config CONFIG.json | --preset NAME) --out OUT [--seed S] [--dtype f32|bf16|f16]";
  spec.summary =
      "Writes a randomly initialised model of the shape a config.json (or a named preset) gives, as a\n"
      "Hugging Face folder (or HDF5 when OUT ends in .h5): linear and embedding weights normal(0, std)\n"
      "with std the config's initializer_range (default 0.02), norms one, biases zero. Each tensor\n"
      "draws from its own stream of the seed, so a seed gives byte-identical files.\n"
      "Presets: tiny (4 layers, hidden 128), demo (tiny with vocab_size 258), smollm2-135m, bench-2gb (0.56 B params, 2.2 GB in f32), llama-1b, qwen2.5-0.5b, qwen3-0.6b, llama2-7b (6.7 B params, 13.5 GB in bf16).\n"
      "--tokenizer bytes adds a byte-level tokenizer (256 bytes, <|im_start|> = 256, <|im_end|> = 257,\n"
      "the ChatML template) for training from scratch; it needs vocab_size 258 (--preset demo).";
  spec.options.add_options()
      ("config", cli::po::value<std::string>(), "a Hugging Face config.json")
      ("preset", cli::po::value<std::string>(), "a named shape (see above)")
      ("out", cli::po::value<std::string>()->required(), "output folder (or .h5 file)")
      ("seed", cli::po::value<uint64_t>()->default_value(0), "random seed")
      ("std", cli::po::value<double>()->default_value(0), "weight std (default: the config's initializer_range)")
      ("dtype", cli::po::value<std::string>()->default_value("f32"), "f32, bf16 or f16")
      ("vocab-size", cli::po::value<int64_t>(), "replace the config's vocab_size")
      ("tokenizer", cli::po::value<std::string>(), "bytes: write a byte-level ChatML tokenizer along")
      ("shard-size", cli::po::value<std::string>()->default_value("5GB"), "largest safetensors shard")
      ("overwrite", "replace OUT if it exists")
      ("quiet,q", "no progress output");
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;

  const DType dtype = cli::parse_output_dtype((*vm)["dtype"].as<std::string>(), "dtype");
  if ((*vm)["std"].as<double>() < 0) throw UsageError("--std must not be negative");
  WriteOptions opts;
  opts.shard_bytes = cli::parse_size((*vm)["shard-size"].as<std::string>(), "shard-size");
  opts.overwrite = vm->count("overwrite") > 0;
  opts.progress = vm->count("quiet") == 0;

  ModelConfig config = config_from_options(*vm);
  if (vm->count("vocab-size")) {
    const int64_t v = (*vm)["vocab-size"].as<int64_t>();
    if (v < 1 || v > (int64_t(1) << 24)) throw UsageError("--vocab-size must lie in [1, 16777216]");
    config.vocab_size = v;
  }
  std::vector<GeneratedFile> files;
  if (vm->count("tokenizer")) {
    if ((*vm)["tokenizer"].as<std::string>() != "bytes") throw UsageError("--tokenizer must be bytes");
    if (config.vocab_size != kByteTokenizerVocab)
      throw UsageError("--tokenizer bytes needs vocab_size " + std::to_string(kByteTokenizerVocab) + " (--vocab-size " +
                       std::to_string(kByteTokenizerVocab) + "), not " + std::to_string(config.vocab_size));
    files = byte_tokenizer_files();
  }
  auto model = random_init(config, (*vm)["seed"].as<uint64_t>(), dtype, (*vm)["std"].as<double>(), std::move(files));
  const std::string out = (*vm)["out"].as<std::string>();
  write_checkpoint(*model, out, opts);
  spdlog::info("wrote a random {} model ({} parameters) to {}", config.model_type, model->parameter_count(), out);
  return 0;
}

}  // namespace upcycle

// `upcycle forward --model PATH --tokens 1,2,3 --out FILE`: the logits of one sequence, as raw
// float32 for scripts to compare against other implementations.
#include <bit>
#include <charconv>
#include <fstream>

#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "core/staged_path.hpp"
#include "formats/open_checkpoint.hpp"
#include "trainer/engine.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"
#include "upcycle/cuda_plugin.hpp"

namespace upcycle {

namespace {

static_assert(std::endian::native == std::endian::little, "--out is written as the host's floats");

// "1,2,3" → {1, 2, 3}; UsageError on anything but comma-separated non-negative integers.
std::vector<int32_t> parse_tokens(const std::string& text) {
  std::vector<int32_t> ids;
  size_t begin = 0;
  while (begin <= text.size()) {
    const size_t end = std::min(text.find(',', begin), text.size());
    int32_t id = 0;
    const auto [ptr, ec] = std::from_chars(text.data() + begin, text.data() + end, id);
    if (ec != std::errc() || ptr != text.data() + end || begin == end || id < 0)
      throw UsageError("--tokens: '" + text.substr(begin, end - begin) + "' is not a token id (a non-negative integer)");
    ids.push_back(id);
    begin = end + 1;
  }
  return ids;
}

void check_tokens(const std::vector<int32_t>& ids, const Checkpoint& ckpt) {
  const ModelConfig& c = ckpt.config();
  for (int32_t id : ids)
    require(id < c.vocab_size, ckpt.path(),
            "token " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(c.vocab_size) + ")");
  require(int64_t(ids.size()) <= c.max_position_embeddings, ckpt.path(),
          std::to_string(ids.size()) + " tokens exceed max_position_embeddings " +
              std::to_string(c.max_position_embeddings));
}

void write_floats(const std::vector<float>& values, const std::filesystem::path& out, bool overwrite) {
  StagedPath staged(out, overwrite);
  std::ofstream f(staged.temp(), std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(values.data()), std::streamsize(values.size() * sizeof(float)));
  f.close();
  require(bool(f), out, "could not write the logits");
  staged.commit();
}

}  // namespace

int cmd_forward(const Args& args) {
  cli::Spec spec;
  spec.usage =
      "upcycle forward --model PATH --tokens 1,2,3 --out FILE [--device cpu|cuda] [--precision f32|bf16] [--adapter DIR] [--overwrite]";
  spec.summary =
      "Runs the model's forward pass (f32 on the CPU, bf16 on the GPU) over one sequence of token\n"
      "ids (positions 0, 1, ...) and writes the logits to FILE as raw little-endian float32, shape\n"
      "[tokens, vocab], row major. The model is any checkpoint (llama, mistral, qwen2, qwen3, mixtral,\n"
      "qwen2_moe or qwen3_moe; any format). On the CPU its bf16, f16 and Q8_0 matrices are read as stored, never\n"
      "widened whole.";
  spec.options.add_options()
      ("model", cli::po::value<std::string>()->required(), "checkpoint (folder, .h5 or .gguf)")
      ("tokens", cli::po::value<std::string>()->required(), "comma-separated token ids in [0, vocab)")
      ("out", cli::po::value<std::string>()->required(), "output file of float32 logits")
      ("overwrite", "replace FILE if it exists")
      ("device", cli::po::value<std::string>()->default_value("cpu"), kDeviceHelp)
      ("precision", cli::po::value<std::string>(), kPrecisionHelp)
      ("adapter", cli::po::value<std::string>(), kAdapterHelp);
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;

  const std::vector<int32_t> ids = parse_tokens((*vm)["tokens"].as<std::string>());
  const EngineFactory device = engine_for_device((*vm)["device"].as<std::string>());
  const std::optional<Precision> precision = cli::precision_option(*vm);
  const auto ckpt = open_checkpoint((*vm)["model"].as<std::string>());
  check_tokens(ids, *ckpt);
  const std::vector<float> logits = load_engine(*ckpt, device, {}, precision, cli::adapter_option(*vm))->forward(pack({ids}));
  const std::string out = (*vm)["out"].as<std::string>();
  write_floats(logits, out, vm->count("overwrite") > 0);
  spdlog::info("wrote logits [{}, {}] to {}", ids.size(), ckpt->config().vocab_size, out);
  return 0;
}

}  // namespace upcycle

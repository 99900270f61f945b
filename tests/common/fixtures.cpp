#include "tests/common/fixtures.hpp"

#include <doctest/doctest.h>

#include <unistd.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/expected_tensors.hpp"
#include "formats/checkpoint_writer.hpp"
#include "text/byte_tokenizer.hpp"

namespace upcycle::test {

ScratchDir::ScratchDir() {
  static std::atomic<int> counter{0};
  path_ = fs::temp_directory_path() /
          ("upcycle-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(path_);
  fs::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_chat_tokenizer(const fs::path& dir) {
  for (const GeneratedFile& f : byte_tokenizer_files()) write_file(dir / f.name, *f.contents());
}

fs::path write_sequences(const fs::path& file, int n) {
  std::string lines;
  for (int i = 0; i < n; ++i) {
    std::string ids, labels;
    const int len = 6 + i % 5;
    for (int t = 0; t < len; ++t) {
      const int id = (i * 7 + t * (1 + i % 3)) % 40;
      ids += (t ? "," : "") + std::to_string(id);
      labels += (t ? "," : "") + std::to_string(t < 2 ? -100 : id);
    }
    lines += "{\"input_ids\":[" + ids + "],\"labels\":[" + labels + "]}\n";
  }
  write_file(file, lines);
  return file;
}

std::vector<double> read_losses(const fs::path& metrics) {
  std::vector<double> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  return out;
}

fs::path write_chat_model(const fs::path& dir, const std::string& type, uint64_t seed) {
  ModelConfig c = tiny_config(type);
  c.vocab_size = kChatVocab;
  c.max_position_embeddings = 256;
  WriteOptions opts;
  opts.progress = false;
  write_checkpoint(*random_checkpoint(c, seed), dir / type, opts);
  write_chat_tokenizer(dir / type);
  return dir / type;
}

ModelConfig tiny_config(const std::string& model_type, bool tied) {
  nlohmann::ordered_json j = {
      {"architectures", {model_type == "mixtral" ? "MixtralForCausalLM" : "LlamaForCausalLM"}},
      {"model_type", model_type},
      {"vocab_size", 40},
      {"hidden_size", 16},
      {"intermediate_size", 24},
      {"num_hidden_layers", 2},
      {"num_attention_heads", 4},
      {"num_key_value_heads", 2},
      {"max_position_embeddings", 64},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},
      {"tie_word_embeddings", tied},
      {"bos_token_id", 1},
      {"an_unknown_field", {{"kept", true}}},
  };
  if (model_type == "mixtral") {
    j["num_local_experts"] = 4;
    j["num_experts_per_tok"] = 2;
    j["router_aux_loss_coef"] = 0.01;
  }
  if (model_type == "qwen2_moe") {  // Qwen's own routing: top-k not renormalised
    j["num_experts"] = 4;
    j["num_experts_per_tok"] = 2;
    j["moe_intermediate_size"] = 12;
    j["shared_expert_intermediate_size"] = 20;
    j["norm_topk_prob"] = false;
    j["router_aux_loss_coef"] = 0.01;
  }
  return ModelConfig::from_json(j, "<tiny_config>");
}

std::vector<float> random_values(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed * 0x9e3779b97f4a7c15ull + 1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  if (n > 0 && v[0] == 0.0f) v[0] = 0.5f;
  return v;
}

std::unique_ptr<Checkpoint> random_checkpoint(const ModelConfig& config, uint64_t seed, DType dtype,
                                              std::optional<Scheme> scheme) {
  std::vector<TensorInfo> infos;
  for (const auto& e : expected_tensors(config, scheme)) infos.push_back({e.name, dtype, e.shape});
  auto loader = [seed, dtype](const TensorInfo& info) {
    uint64_t h = seed;
    for (char c : info.name) h = h * 131 + uint8_t(c);
    Tensor t = Tensor::from_f32(info.shape, random_values(*shape_elements(info.shape), h));
    return t.to(dtype);
  };
  return std::make_unique<ComputedCheckpoint>(config, std::move(infos), loader);
}

fs::path write_model(const ScratchDir& dir, const std::string& name, const ModelConfig& config, uint64_t seed,
                     DType dtype) {
  WriteOptions opts;
  opts.progress = false;
  write_checkpoint(*random_checkpoint(config, seed, dtype), dir / name, opts);
  return dir / name;
}

fs::path write_dense(const ScratchDir& dir, const std::string& name, uint64_t seed, const std::string& type,
                     int64_t intermediate) {
  ModelConfig c = tiny_config(type);
  if (intermediate) c.intermediate_size = intermediate;
  return write_model(dir, name, c, seed);
}

std::vector<float> tensor_values(const Checkpoint& c, const std::string& name) { return c.load(name).to_f32_vector(); }

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

RunResult run_upcycle(const std::string& args) { return run_upcycle_with("", args); }

RunResult run_upcycle_with(const std::string& prefix, const std::string& args) {
  ScratchDir dir;
  const char* binary = std::getenv("UPCYCLE_BINARY");  // a bundle's, on a machine it was carried to
  std::string cmd = prefix + "'" + (binary ? binary : UPCYCLE_BINARY) + "' " + args + " >'" + (dir / "out").string() + "' 2>'" +
                    (dir / "err").string() + "'";
  int status = std::system(cmd.c_str());
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return {code, read_file(dir / "out"), read_file(dir / "err")};
}

std::optional<fs::path> smollm2_gguf() {
  if (const char* env = std::getenv("UPCYCLE_SMOLLM2_GGUF"); env && fs::exists(env)) return fs::path(env);
  const char* cache = std::getenv("UPCYCLE_CACHE");
  const char* home = std::getenv("HOME");
  fs::path base = cache ? fs::path(cache) : fs::path(home ? home : "/tmp") / ".cache" / "upcycle";
  fs::path p = base / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf";
  if (fs::exists(p)) return p;
  return std::nullopt;
}

std::optional<fs::path> shared_tokenizers() {
  fs::path dir = fs::path(UPCYCLE_SOURCE_DIR) / ".." / "shared" / "tokenizers";
  if (fs::is_directory(dir)) return dir;
  MESSAGE("skipped: no reference vocabularies at " << dir.string());
  return std::nullopt;
}

std::vector<std::string> vocab_test_strings(const fs::path& inp) {
  const std::string text = read_file(inp), separator = "\n__ggml_vocab_test__\n";
  std::vector<std::string> strings;
  for (size_t pos = 0, next; (next = text.find(separator, pos)) != std::string::npos; pos = next + separator.size())
    strings.push_back(text.substr(pos, next - pos));
  return strings;
}

CountedLoads::CountedLoads(const Checkpoint& inner, std::atomic<int64_t>& loads)
    : Checkpoint(inner.path(), inner.config(), inner.tensors(), inner.side_files(), inner.generated_files()),
      inner_(inner),
      loads_(loads) {}

Tensor CountedLoads::load(const std::string& name) const {
  ++loads_;
  return inner_.load(name);
}

bool same_tensor(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.nbytes() == b.nbytes() &&
         std::memcmp(a.bytes().data(), b.bytes().data(), a.nbytes()) == 0;
}

}  // namespace upcycle::test

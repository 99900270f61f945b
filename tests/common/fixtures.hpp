// What the test suites share: a scratch folder per test, small model configs, seeded random
// tensors, raw file writing, and running the `upcycle` binary.
#pragma once
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/checkpoint.hpp"
#include "core/tensor_names.hpp"

namespace upcycle::test {

namespace fs = std::filesystem;

// A fresh, empty folder under the system temp dir, removed when the object goes.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

// A tiny config of a model type ("llama", "qwen2", "qwen3", "mistral", "mixtral", "qwen2_moe"): 2
// layers, hidden 16, 4 heads, 2 kv heads, intermediate 24, vocab 40; mixtral adds 4 experts top-2,
// qwen2_moe 4 experts of width 12 top-2 (not renormalised) and a shared expert of width 20.
ModelConfig tiny_config(const std::string& model_type = "llama", bool tied = false);

// Seeded values in [-1, 1) that are never all zero.
std::vector<float> random_values(size_t n, uint64_t seed);

// A computed checkpoint of every tensor the config implies, random values, stored as `dtype`.
// Named in `scheme`, by default the config's family's (default_scheme).
std::unique_ptr<Checkpoint> random_checkpoint(const ModelConfig& config, uint64_t seed, DType dtype = DType::F32,
                                              std::optional<Scheme> scheme = std::nullopt);

// A random checkpoint of `config` (random_checkpoint) written to dir/name as a Hugging Face folder.
fs::path write_model(const ScratchDir& dir, const std::string& name, const ModelConfig& config, uint64_t seed,
                     DType dtype = DType::F32);
// A tiny dense checkpoint of `type` (intermediate_size replaced when given) written to dir/name.
fs::path write_dense(const ScratchDir& dir, const std::string& name, uint64_t seed, const std::string& type = "llama",
                     int64_t intermediate = 0);

// A tensor's values as f32.
std::vector<float> tensor_values(const Checkpoint& c, const std::string& name);

// The byte tokenizer's files (text/byte_tokenizer.hpp) in dir, for models of vocab_size kChatVocab.
inline constexpr int64_t kChatVocab = 258;
void write_chat_tokenizer(const fs::path& dir);
// A model folder dir/type: the tiny config of `type` with the chat tokenizer's vocabulary and 256
// positions, random weights from seed, and the chat tokenizer's files.
fs::path write_chat_model(const fs::path& dir, const std::string& type, uint64_t seed);

// Pre-tokenized data: n samples of arithmetic sequences over the first 40 token ids, 6 to 10
// tokens long, the first 2 a prompt (labels -100).
fs::path write_sequences(const fs::path& file, int n);

// The "loss" of each line of a run's metrics.jsonl.
std::vector<double> read_losses(const fs::path& metrics);

void write_file(const fs::path& path, const std::string& bytes);
std::string read_file(const fs::path& path);

// Runs `upcycle ARGS` (a shell-quoted string): $UPCYCLE_BINARY, else the one built with the
// tests; returns exit code, stdout and stderr.
struct RunResult {
  int code;
  std::string out, err;
};
RunResult run_upcycle(const std::string& args);
// The same with a launcher before the binary: `PREFIX upcycle ARGS` ("mpirun -np 2 ").
RunResult run_upcycle_with(const std::string& prefix, const std::string& args);
// A path quoted for run_upcycle's shell: 'PATH'.
inline std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

// The real SmolLM2-135M-Instruct GGUF when scripts/fetch-smollm2.sh has fetched it
// ($UPCYCLE_SMOLLM2_GGUF, or the default cache), else nullopt: tests then skip with a message.
std::optional<fs::path> smollm2_gguf();

// ../shared/tokenizers beside the project (real vocabularies with reference outputs), or
// nullopt with a doctest MESSAGE saying the tests that need it skip.
std::optional<fs::path> shared_tokenizers();

// The strings of a llama.cpp vocabulary test file (NAME.gguf.inp): each followed by a line
// "__ggml_vocab_test__".
std::vector<std::string> vocab_test_strings(const fs::path& inp);

// Another checkpoint's tensors, config and files, its loads counted in `loads`: how often a
// stage reads its inputs.
class CountedLoads : public Checkpoint {
 public:
  CountedLoads(const Checkpoint& inner, std::atomic<int64_t>& loads);
  Tensor load(const std::string& name) const override;
  std::string_view format() const override { return inner_.format(); }

 private:
  const Checkpoint& inner_;
  std::atomic<int64_t>& loads_;
};

// Bitwise equality of two tensors' dtype, shape and bytes.
bool same_tensor(const Tensor& a, const Tensor& b);

}  // namespace upcycle::test

// A GGUF writer for tests: builds well-formed files from metadata and tensors, quantizes f32 data
// into GGUF's block types, writes whole tiny models the way llama.cpp's converter lays them out,
// and exposes the byte-level pieces so that a test can break any one field.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/checkpoint.hpp"

namespace upcycle::test {

// ggml's type numbers, spelled out here independently of the reader.
namespace ggml {
constexpr uint32_t F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, Q4_K = 12, Q6_K = 14, BF16 = 30;
}

// GGUF's metadata value types.
namespace gguf_type {
constexpr uint32_t U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
                   U64 = 10, I64 = 11, F64 = 12;
}

// Little-endian appends, chained: Bytes().raw("GGUF").u32(3).u64(0).
struct Bytes {
  std::string data;
  Bytes& raw(std::string_view s);
  Bytes& u8(uint8_t v);
  Bytes& u16(uint16_t v);
  Bytes& u32(uint32_t v);
  Bytes& i32(int32_t v);
  Bytes& u64(uint64_t v);
  Bytes& f32(float v);
  Bytes& str(std::string_view s);  // u64 length, then the bytes
};

// One metadata value, encoded: its type number and its bytes (without the type).
struct GgufValue {
  uint32_t type;
  std::string bytes;
};
GgufValue gguf_u32(uint32_t v);
GgufValue gguf_i32(int32_t v);
GgufValue gguf_u64(uint64_t v);
GgufValue gguf_f32(float v);
GgufValue gguf_bool(bool v);
GgufValue gguf_string(std::string_view s);
GgufValue gguf_array(uint32_t element_type, const std::vector<GgufValue>& elements);
GgufValue gguf_strings(const std::vector<std::string>& strings);

struct GgufTensorSpec {
  std::string name;
  uint32_t type;  // ggml type number
  Shape shape;    // row major, slowest first (written fastest first, as GGUF lists dims)
  std::string data;  // the bytes as stored
  std::optional<uint64_t> offset = std::nullopt;  // relative to the data section; default: next free aligned
};

// Writes exactly what it is given: nothing is validated, so tests can write broken files too.
class GgufWriter {
 public:
  uint32_t version = 3;
  uint64_t alignment = 32;  // of the data section and default offsets; set general.alignment to match

  void set(std::string key, GgufValue value);
  void add_tensor(GgufTensorSpec tensor);
  std::string bytes() const;
  void write(const std::filesystem::path& path) const;

 private:
  std::vector<std::pair<std::string, GgufValue>> kvs_;
  std::vector<GgufTensorSpec> tensors_;
};

// f32 values in a ggml type's storage: F32 as is, F16 and BF16 rounded to nearest even, the block
// types by plain round-to-nearest quantizers (not llama.cpp's error-minimizing search). The count
// must be whole blocks.
std::string encode(uint32_t ggml_type, std::span<const float> values);
GgufTensorSpec tensor_from_f32(std::string name, uint32_t ggml_type, Shape shape, std::span<const float> values);

// llama.cpp's q/k row permutation: HF rows [heads, 2, D/2, cols] reordered as [heads, D/2, 2, cols].
std::vector<float> interleave_rope_rows(std::span<const float> hf, int64_t heads, int64_t rows, int64_t cols);

struct GgufModelOptions {
  std::string architecture = "llama";  // llama permutes q/k rows; qwen2 does not
  uint32_t weight_type = ggml::F32;    // matrices; norms and biases stay F32
};

// Writes a model (Hugging Face names, plain dtypes) as llama.cpp's converter would: GGUF names,
// q/k rows interleaved for llama, hyperparameters under the architecture's keys, a token list of
// vocab_size entries, bos 1 and eos 2.
void write_gguf_model(const Checkpoint& model, const std::filesystem::path& path, const GgufModelOptions& opts = {});

}  // namespace upcycle::test

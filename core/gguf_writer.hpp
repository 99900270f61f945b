// GGUF v3 files written (the container; a model's tensors and keys: formats/gguf_write.hpp): the
// header, typed metadata and tensor infos, then each tensor's bytes at its aligned offset.
#pragma once
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "core/dtype.hpp"
#include "core/tensor.hpp"

namespace upcycle {

// One metadata value, in the GGUF type llama.cpp reads it as (its loader refuses a key of another
// type): counts and ids u32, token types i32, scores and hyperparameters f32.
using GgufValue = std::variant<uint32_t, int32_t, float, bool, std::string, std::vector<std::string>,
                               std::vector<int32_t>, std::vector<float>>;

struct GgufKeyValue {
  std::string key;
  GgufValue value;
};

struct GgufTensorInfo {
  std::string name;
  DType dtype;
  Shape shape;  // row major, slowest first (written fastest first, as GGUF lists dims)
};

inline constexpr uint64_t kGgufAlignment = 32;  // GGUF's default: no general.alignment key needed

// Where everything goes: the bytes before the data section (padded to the alignment), and each
// tensor's offset from the data section's start and its byte count.
struct GgufLayout {
  std::string header;
  std::vector<uint64_t> offsets, sizes;
  uint64_t data_bytes = 0;  // the data section, each tensor padded to the alignment
};

// std::invalid_argument for a tensor whose rows are not whole blocks of its dtype.
GgufLayout gguf_layout(const std::vector<GgufKeyValue>& metadata, const std::vector<GgufTensorInfo>& tensors);

}  // namespace upcycle

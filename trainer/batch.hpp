// A model's input: token sequences packed into one row.
#pragma once
#include <cstdint>
#include <vector>

namespace upcycle {

// Sequences packed into one row: sequence s is tokens [cu_seqlens[s], cu_seqlens[s+1]) and its
// positions restart at 0.
struct Batch {
  std::vector<int32_t> ids;         // [N]
  std::vector<int32_t> positions;   // [N]
  std::vector<int32_t> cu_seqlens;  // [S+1]
};
Batch pack(const std::vector<std::vector<int32_t>>& sequences);

}  // namespace upcycle

#include "trainer/batch.hpp"

#include <cstddef>

namespace upcycle {

Batch pack(const std::vector<std::vector<int32_t>>& sequences) {
  Batch b;
  b.cu_seqlens.push_back(0);
  for (const auto& s : sequences) {
    b.ids.insert(b.ids.end(), s.begin(), s.end());
    for (size_t p = 0; p < s.size(); ++p) b.positions.push_back(int32_t(p));
    b.cu_seqlens.push_back(int32_t(b.ids.size()));
  }
  return b;
}

}  // namespace upcycle

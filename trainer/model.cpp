// The CPU model: the backend-generic definitions (model_forward.hpp, model_backward.hpp)
// instantiated over trainer/ops, in float for real work and double for the gradient checks.
#include "trainer/model.hpp"

#include "trainer/model_backward.hpp"
#include "trainer/model_forward.hpp"

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

template class BasicTransformer<CpuBackend<float>>;
template class BasicTransformer<CpuBackend<double>>;

}  // namespace upcycle

#include "convert/weights_checkpoint.hpp"

#include <algorithm>
#include <stdexcept>

#include "core/expected_tensors.hpp"
#include "trainer/parameters.hpp"

namespace upcycle {

namespace {

using Buffers = std::vector<const std::vector<float>*>;

// The buffers holding a tensor's values, one after another: its own, or a fused tensor's per
// expert (gate_up [E, 2I, H]: expert e's w1 rows then its w3 rows; down [E, H, I]: its w2).
Buffers buffers(Weights<float>& w, const TensorId& id) {
  if (id.role != Role::ExpertsGateUp && id.role != Role::ExpertsDown) return {&tensor_slot(w, id)};
  const LayerWeights<float>& l = w.layers.at(size_t(id.layer));
  Buffers out;
  for (size_t e = 0; e < l.expert_down.size(); ++e) {
    if (id.role == Role::ExpertsDown) out.push_back(&l.expert_down[e]);
    else out.insert(out.end(), {&l.expert_gate[e], &l.expert_up[e]});
  }
  return out;
}

// The tensor over the weights' buffers, in f32.
Tensor f32_tensor(const std::shared_ptr<Weights<float>>& w, const TensorInfo& info, const Buffers& parts) {
  if (parts.size() == 1) {
    const auto* values = reinterpret_cast<const std::byte*>(parts[0]->data());
    return Tensor::borrowed(DType::F32, info.shape, std::shared_ptr<const std::byte>(w, values));
  }
  return Tensor::computed(info.shape, [w, parts](uint64_t first, std::span<float> out) {
    uint64_t at = 0;  // where the buffer starts in the tensor
    for (const std::vector<float>* p : parts) {
      const uint64_t lo = std::max(at, first), hi = std::min(at + p->size(), first + out.size());
      if (lo < hi) std::copy(p->begin() + ptrdiff_t(lo - at), p->begin() + ptrdiff_t(hi - at), out.begin() + ptrdiff_t(lo - first));
      at += p->size();
    }
  });
}

}  // namespace

std::unique_ptr<Checkpoint> checkpoint_like(const Checkpoint& like, std::shared_ptr<Weights<float>> weights) {
  const Scheme scheme = detect_scheme(like.config(), like.tensors());
  for (const TensorInfo& t : like.tensors())
    if (!parse_tensor_name(t.name, scheme)) throw std::invalid_argument("checkpoint_like: '" + t.name + "' has no role");
  auto load = [weights, scheme](const TensorInfo& info) {
    const Buffers parts = buffers(*weights, *parse_tensor_name(info.name, scheme));
    uint64_t n = 0;
    for (const std::vector<float>* p : parts) n += p->size();
    if (n != *shape_elements(info.shape))
      throw std::logic_error("checkpoint_like: '" + info.name + "' holds " + std::to_string(n) + " values, not " +
                             shape_string(info.shape));
    return f32_tensor(weights, info, parts).to(info.dtype);
  };
  return std::make_unique<ComputedCheckpoint>(like.config(), like.tensors(), load, like.side_files(), like.generated_files());
}

}  // namespace upcycle

// The loop both weight loaders share (trainer/model_load.cpp's f32 buffers, trainer/
// stored_weights.cpp's stored tensors): every tensor the config expects, checked, converted to
// the buffer type V and placed by role, fused experts split per expert. Internal to trainer/.
#pragma once
#include "core/checkpoint.hpp"
#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "trainer/parameters.hpp"

namespace upcycle {

// convert(tensor, role) -> V; slice(V all, shape [E, R, C], e, first, rows) -> V [rows, C], rows
// [first, first + rows) of matrix e. `load` reads a tensor by name (Checkpoint::load or
// load_stored).
template <class V, class Load, class Convert, class Slice>
WeightsOf<V> load_by_role(const Checkpoint& ckpt, Load load, Convert convert, Slice slice) {
  const ModelConfig& c = ckpt.config();
  WeightsOf<V> w;
  parameters(w, c);  // lays out the layers and the per-expert buffers
  for (const auto& e : expected_tensors(c, detect_scheme(c, ckpt.tensors()))) {
    require(ckpt.find(e.name) != nullptr, ckpt.path(), e.name, "missing");
    const Tensor t = load(e.name);
    require(t.shape() == e.shape, ckpt.path(), e.name,
            "shape " + shape_string(t.shape()) + ", expected " + shape_string(e.shape));
    V values = convert(t, e.id.role);
    if (e.id.role != Role::ExpertsGateUp && e.id.role != Role::ExpertsDown) {
      tensor_slot(w, e.id) = std::move(values);
      continue;
    }
    // Fused experts: gate_up [E, 2I, H] is w1 rows then w3 rows; down [E, H, I].
    LayerWeightsOf<V>& l = w.layers.at(size_t(e.id.layer));
    for (int64_t x = 0; x < e.shape[0]; ++x) {
      if (e.id.role == Role::ExpertsDown) {
        l.expert_down.at(size_t(x)) = slice(values, e.shape, x, 0, e.shape[1]);
        continue;
      }
      const int64_t I = e.shape[1] / 2;
      l.expert_gate.at(size_t(x)) = slice(values, e.shape, x, 0, I);
      l.expert_up.at(size_t(x)) = slice(values, e.shape, x, I, I);
    }
  }
  return w;
}

}  // namespace upcycle

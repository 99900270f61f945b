// A LoRA model's weights on the device: the base uploaded tensor by tensor, and an adapter's
// terms added to it.
#include "cuda/lora_backend.hpp"
#include "trainer/stored_weights.hpp"

namespace upcycle::cuda {

template <class T>
LoraWeights<T> load_lora_weights(const Checkpoint& ckpt) {
  StoredWeights stored = load_stored_weights(ckpt);  // views of the file, fused experts split
  LoraWeights<T> device;
  auto targets = parameters(device, ckpt.config());
  auto sources = parameters(stored, ckpt.config());
  for (size_t i = 0; i < sources.size(); ++i) {
    const StoredWeight& w = *sources[i].values;
    if (w.empty()) continue;
    *targets[i].values = LoraWeight<T>(to_device<T>(w.widened()));
    w.tensor().release(0, w.size());  // a mapped file's pages: never read again
  }
  return device;
}

template <class T>
std::vector<std::shared_ptr<DeviceLowRank>> apply_adapter(LoraWeights<T>& weights, const LoraAdapter& adapter) {
  const LoraConfig& c = adapter.config;
  if (c.is_moe()) {
    for (size_t l = 0; l < weights.layers.size(); ++l) {
      LayerWeightsOf<LoraWeight<T>>& layer = weights.layers[l];
      layer.expert_gate.assign(size_t(c.experts), layer.gate);
      layer.expert_up.assign(size_t(c.experts), layer.up);
      layer.expert_down.assign(size_t(c.experts), layer.down);
      layer.gate = layer.up = layer.down = LoraWeight<T>();
      layer.router = LoraWeight<T>(to_device<T>(adapter.routers.at(l).to_f32_vector()));
    }
  }
  std::vector<std::shared_ptr<DeviceLowRank>> terms;
  for (const LoraModule& m : adapter.modules) {
    auto term = std::make_shared<DeviceLowRank>();
    term->a = to_device<float>(m.a.to_f32_vector());
    term->b = to_device<float>(m.b.to_f32_vector());
    term->rank = c.rank;
    term->scale = float(c.scaling());
    LoraWeight<T>& w = tensor_slot(weights, lora_module_tensor(m));
    w = w.with_low_rank(term);
    terms.push_back(std::move(term));
  }
  return terms;
}

template LoraWeights<float> load_lora_weights<float>(const Checkpoint&);
template LoraWeights<bf16> load_lora_weights<bf16>(const Checkpoint&);
template std::vector<std::shared_ptr<DeviceLowRank>> apply_adapter<float>(LoraWeights<float>&, const LoraAdapter&);
template std::vector<std::shared_ptr<DeviceLowRank>> apply_adapter<bf16>(LoraWeights<bf16>&, const LoraAdapter&);

}  // namespace upcycle::cuda

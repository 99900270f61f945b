// A LoRA model's weights on the device: the base uploaded tensor by tensor, and an adapter's
// terms added to it.
#include "cuda/lora_backend.hpp"
#include "trainer/lora_terms.hpp"
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
  return attach_lora<DeviceLowRank>(
      weights, adapter,
      [](DeviceLowRank& t, const LoraModule& m) {
        t.a = to_device<float>(m.a.to_f32_vector());
        t.b = to_device<float>(m.b.to_f32_vector());
      },
      [](const Tensor& router) { return LoraWeight<T>(to_device<T>(router.to_f32_vector())); });
}

template LoraWeights<float> load_lora_weights<float>(const Checkpoint&);
template LoraWeights<bf16> load_lora_weights<bf16>(const Checkpoint&);
template std::vector<std::shared_ptr<DeviceLowRank>> apply_adapter<float>(LoraWeights<float>&, const LoraAdapter&);
template std::vector<std::shared_ptr<DeviceLowRank>> apply_adapter<bf16>(LoraWeights<bf16>&, const LoraAdapter&);

}  // namespace upcycle::cuda

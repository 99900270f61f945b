#include "cuda/optimizer.hpp"

#include <vector>

#include "trainer/optimizer.hpp"

namespace upcycle::cuda {

template <class T>
AdamW<T>::AdamW(Weights<float>& master, DeviceWeights<T>& model, const ModelConfig& config,
                const ops::AdamWConfig& hyper, const PartSet& frozen)
    : config_(config),
      hyper_(hyper),
      master_(upload<float>(master, config)),
      m_(zeros_like(master, config, frozen)),
      v_(zeros_like(master, config, frozen)),
      model_(model) {}

template <class T>
double AdamW<T>::clip(DeviceWeights<float>& grads, double max_norm) const {
  std::vector<float*> tensors;
  std::vector<int64_t> sizes;
  for (auto& p : parameters(grads, config_))
    if (!p.values->empty()) tensors.push_back(p.values->data()), sizes.push_back(int64_t(p.values->size()));
  if (max_norm > 0) return clip_global_norm(tensors.data(), sizes.data(), int64_t(tensors.size()), max_norm);
  const std::vector<const float*> views(tensors.begin(), tensors.end());
  return global_norm(views.data(), sizes.data(), int64_t(views.size()));
}

template <class T>
void AdamW<T>::step(DeviceWeights<float>& grads, double lr) {
  ++steps_;
  ops::AdamWConfig hyper = hyper_;
  hyper.lr = lr;
  auto w = parameters(master_, config_);
  auto copy = parameters(model_, config_);
  auto g = parameters(grads, config_);
  auto m = parameters(m_, config_);
  auto v = parameters(v_, config_);
  for (size_t i = 0; i < w.size(); ++i) {
    if (m[i].values->empty()) continue;  // frozen
    adamw_step<T>(w[i].values->data(), copy[i].values->data(), g[i].values->data(), m[i].values->data(),
                  v[i].values->data(), int64_t(w[i].values->size()), hyper, steps_, decays(w[i].tensor.id.role));
  }
}

template <class T>
void AdamW<T>::save(const std::filesystem::path& file) {
  Weights<float> m = download(m_, config_), v = download(v_, config_);
  save_moments(file, m, v, config_, steps_);
}

template <class T>
void AdamW<T>::load(const std::filesystem::path& file) {
  Weights<float> m = download(m_, config_), v = download(v_, config_);  // shaped as trained, frozen empty
  steps_ = load_moments(file, m, v, config_);
  m_ = upload<float>(m, config_);
  v_ = upload<float>(v, config_);
}

template class AdamW<float>;
template class AdamW<bf16>;

}  // namespace upcycle::cuda

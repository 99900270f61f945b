#include "cuda/optimizer.hpp"

#include "trainer/optimizer.hpp"

namespace upcycle::cuda {

template <class T>
AdamW<T>::AdamW(std::vector<TrainedTensor<T>> tensors, const ops::AdamWConfig& hyper)
    : tensors_(std::move(tensors)), hyper_(hyper) {
  for (const TrainedTensor<T>& t : tensors_) {
    m_.emplace_back(size_t(t.n)).zero();
    v_.emplace_back(size_t(t.n)).zero();
  }
}

template <class T>
void AdamW<T>::zero_grads() {
  for (const TrainedTensor<T>& t : tensors_)
    if (t.n > 0) UPCYCLE_CUDA(cudaMemsetAsync(t.grad, 0, size_t(t.n) * sizeof(float)));
}

template <class T>
double AdamW<T>::clip(double max_norm) {
  std::vector<float*> grads;
  std::vector<int64_t> sizes;
  for (const TrainedTensor<T>& t : tensors_) grads.push_back(t.grad), sizes.push_back(t.n);
  if (max_norm > 0) return clip_global_norm(grads.data(), sizes.data(), int64_t(grads.size()), max_norm);
  const std::vector<const float*> views(grads.begin(), grads.end());
  return global_norm(views.data(), sizes.data(), int64_t(views.size()));
}

template <class T>
void AdamW<T>::step(double lr) {
  ++steps_;
  ops::AdamWConfig hyper = hyper_;
  hyper.lr = lr;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const TrainedTensor<T>& t = tensors_[i];
    adamw_step<T>(t.values, t.copy, t.grad, m_[i].data(), v_[i].data(), t.n, hyper, steps_, t.decay);
  }
}

template <class T>
void AdamW<T>::save(const std::filesystem::path& file) {
  std::vector<std::vector<float>> m, v;
  std::vector<MomentSlot> slots;
  m.reserve(tensors_.size()), v.reserve(tensors_.size());  // the slots point into them
  for (size_t i = 0; i < tensors_.size(); ++i) {
    m.push_back(m_[i].download());
    v.push_back(v_[i].download());
    slots.push_back({tensors_[i].name, tensors_[i].shape, &m.back(), &v.back()});
  }
  save_moments(file, slots, steps_);
}

template <class T>
void AdamW<T>::load(const std::filesystem::path& file) {
  std::vector<std::vector<float>> m(tensors_.size()), v(tensors_.size());
  std::vector<MomentSlot> slots;
  for (size_t i = 0; i < tensors_.size(); ++i) slots.push_back({tensors_[i].name, tensors_[i].shape, &m[i], &v[i]});
  steps_ = load_moments(file, slots);  // checks each shape against the tensor's
  for (size_t i = 0; i < tensors_.size(); ++i) {
    m_[i].upload(m[i]);
    v_[i].upload(v[i]);
  }
  UPCYCLE_CUDA(cudaStreamSynchronize(nullptr));  // m and v must outlive the copies
}

template class AdamW<float>;
template class AdamW<bf16>;

}  // namespace upcycle::cuda

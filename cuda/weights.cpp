// Weights between the host and the device, tensor by tensor in canonical order.
#include "cuda/backend.hpp"

namespace upcycle::cuda {

template <class T>
DeviceBuffer<T> to_device(const std::vector<float>& host) {
  const std::vector<T> converted(host.begin(), host.end());  // rounds to nearest even for bf16
  DeviceBuffer<T> device;
  device.upload(converted);
  UPCYCLE_CUDA(cudaStreamSynchronize(nullptr));  // `converted` must outlive the copy
  return device;
}

template <class T>
DeviceWeights<T> upload(Weights<float>& host, const ModelConfig& config) {
  DeviceWeights<T> device;
  auto targets = parameters(device, config);
  auto sources = parameters(host, config);
  for (size_t i = 0; i < sources.size(); ++i) *targets[i].values = to_device<T>(*sources[i].values);
  return device;
}

template <class T>
Weights<float> download(DeviceWeights<T>& device, const ModelConfig& config) {
  Weights<float> host;
  auto targets = parameters(host, config);
  auto sources = parameters(device, config);
  for (size_t i = 0; i < sources.size(); ++i) {
    const std::vector<T> values = sources[i].values->download();
    targets[i].values->assign(values.begin(), values.end());
  }
  return host;
}

DeviceWeights<float> zeros_like(Weights<float>& host, const ModelConfig& config, const PartSet& frozen) {
  DeviceWeights<float> device;
  auto targets = parameters(device, config);
  auto sources = parameters(host, config);
  for (size_t i = 0; i < sources.size(); ++i) {
    if (frozen[size_t(role_info(sources[i].tensor.id.role).part)]) continue;
    targets[i].values->resize(sources[i].values->size());
    targets[i].values->zero();
  }
  return device;
}

template DeviceBuffer<float> to_device<float>(const std::vector<float>&);
template DeviceBuffer<bf16> to_device<bf16>(const std::vector<float>&);
template DeviceWeights<float> upload<float>(Weights<float>&, const ModelConfig&);
template DeviceWeights<bf16> upload<bf16>(Weights<float>&, const ModelConfig&);
template Weights<float> download<float>(DeviceWeights<float>&, const ModelConfig&);
template Weights<float> download<bf16>(DeviceWeights<bf16>&, const ModelConfig&);

}  // namespace upcycle::cuda

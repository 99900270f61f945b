#include "formats/random_init.hpp"

#include "core/expected_tensors.hpp"
#include "core/random.hpp"

namespace upcycle {

std::unique_ptr<Checkpoint> random_init(const ModelConfig& config, uint64_t seed, DType dtype, double std,
                                        std::vector<GeneratedFile> files) {
  if (std <= 0) std = config.raw.value("initializer_range", 0.02);
  std::vector<TensorInfo> infos;
  std::vector<Role> roles;
  for (const auto& e : expected_tensors(config)) {
    infos.push_back({e.name, dtype, e.shape});
    roles.push_back(e.id.role);
  }
  std::unordered_map<std::string, Role> role_of;
  for (size_t i = 0; i < infos.size(); ++i) role_of.emplace(infos[i].name, roles[i]);

  auto loader = [seed, dtype, std, role_of = std::move(role_of)](const TensorInfo& info) {
    Tensor t = Tensor::zeros(DType::F32, info.shape);
    auto values = t.mutable_span<float>();
    const TensorKind kind = role_info(role_of.at(info.name)).kind;
    if (kind == TensorKind::Norm) {
      std::fill(values.begin(), values.end(), 1.0f);
    } else if (kind == TensorKind::Weight) {
      Rng rng = Rng::stream(seed, info.name);
      for (float& v : values) v = float(rng.normal() * std);
    }
    return t.to(dtype);
  };
  return std::make_unique<ComputedCheckpoint>(config, std::move(infos), std::move(loader), std::vector<std::filesystem::path>{},
                                             std::move(files));
}

}  // namespace upcycle

#include "trainer/optimizer.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <span>

#include "core/error.hpp"
#include "formats/safetensors.hpp"

namespace upcycle {

namespace {

const char* const kSteps = "adamw_steps";

template <class Fn>
void for_each_trained(Weights<float>& w, const ModelConfig& c, Fn fn) {
  for (auto& p : parameters(w, c))
    if (!p.values->empty()) fn(p);
}

}  // namespace

AdamW::AdamW(Weights<float>& weights, const ModelConfig& config, const ops::AdamWConfig& hyper,
             const PartSet& frozen)
    : weights_(weights),
      config_(config),
      hyper_(hyper),
      m_(zeros_like(weights, config, frozen)),
      v_(zeros_like(weights, config, frozen)) {}

double AdamW::clip(Weights<float>& grads, double max_norm) const {
  std::vector<std::span<float>> spans;
  for_each_trained(grads, config_, [&](const Parameter<float>& p) { spans.emplace_back(*p.values); });
  if (max_norm > 0) return ops::clip_global_norm<float>(spans, max_norm);
  const std::vector<std::span<const float>> views(spans.begin(), spans.end());
  return ops::global_norm<float>(views);
}

void AdamW::step(Weights<float>& grads, double lr) {
  ++steps_;
  ops::AdamWConfig hyper = hyper_;
  hyper.lr = lr;
  auto w = parameters(weights_, config_);
  auto g = parameters(grads, config_);
  auto m = parameters(m_, config_);
  auto v = parameters(v_, config_);
  for (size_t i = 0; i < w.size(); ++i) {
    if (m[i].values->empty()) continue;  // frozen
    ops::adamw_step(w[i].values->data(), g[i].values->data(), m[i].values->data(), v[i].values->data(),
                    int64_t(w[i].values->size()), hyper, steps_, decays(w[i].tensor.id.role));
  }
}

void save_moments(const std::filesystem::path& file, Weights<float>& m, Weights<float>& v, const ModelConfig& config,
                  int64_t steps) {
  std::vector<TensorInfo> infos;
  std::vector<const std::vector<float>*> data;
  for (auto [prefix, moments] : {std::pair{"exp_avg.", &m}, std::pair{"exp_avg_sq.", &v}})
    for_each_trained(*moments, config, [&](const Parameter<float>& p) {
      infos.push_back({prefix + p.tensor.name, DType::F32, p.tensor.shape});
      data.push_back(p.values);
    });
  SafetensorsWriter writer(file, infos, {{kSteps, std::to_string(steps)}});
  for (size_t i = 0; i < infos.size(); ++i) writer.write(Tensor::from_f32(infos[i].shape, *data[i]));
  writer.finish();
}

int64_t load_moments(const std::filesystem::path& file, Weights<float>& m, Weights<float>& v,
                     const ModelConfig& config) {
  const SafetensorsFile f = SafetensorsFile::open(file);
  std::map<std::string, const SafetensorsEntry*> by_name;
  for (const auto& e : f.entries()) by_name[e.info.name] = &e;
  for (auto [prefix, moments] : {std::pair{"exp_avg.", &m}, std::pair{"exp_avg_sq.", &v}}) {
    const bool squares = moments == &v;
    for_each_trained(*moments, config, [&](const Parameter<float>& p) {
      const std::string name = prefix + p.tensor.name;
      const auto it = by_name.find(name);
      const std::string where = "tensor '" + name + "'";
      require(it != by_name.end(), file, where, "missing (was the run frozen differently?)");
      // The moments are written in f32: another dtype is not this tool's state, and rounded
      // moments would not resume the run exactly.
      require(it->second->info.dtype == DType::F32, file, where,
              "stored as " + std::string(dtype_name(it->second->info.dtype)) + ", but optimizer moments are f32");
      const Tensor t = f.load(*it->second);
      require(t.shape() == p.tensor.shape, file, where, "shape differs from the model's");
      const auto s = t.span<float>();
      require(std::all_of(s.begin(), s.end(), [&](float x) { return std::isfinite(x) && (!squares || x >= 0); }), file,
              where, squares ? "holds a negative or non-finite value" : "holds a non-finite value");
      p.values->assign(s.begin(), s.end());
      by_name.erase(it);
    });
  }
  require(by_name.empty(), file, "tensor '" + (by_name.empty() ? "" : by_name.begin()->first) + "'",
          "not a moment of this model's trained parameters (" + std::to_string(by_name.size()) +
              " such; was the run frozen differently?)");
  auto steps = f.metadata().find(kSteps);
  require(steps != f.metadata().end(), file, std::string("no '") + kSteps + "' in the metadata");
  const std::string& text = steps->second;
  require(!text.empty() && text.find_first_not_of("0123456789") == std::string::npos && text.size() < 16, file,
          std::string("'") + kSteps + "' is not a step count: '" + text + "'");
  return std::stoll(text);
}

}  // namespace upcycle

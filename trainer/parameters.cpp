#include "trainer/parameters.hpp"

#include <algorithm>
#include <iterator>
#include <map>
#include <sstream>

#include "core/error.hpp"

namespace upcycle {

namespace {

const char* const kPartNames[] = {"embeddings", "attention", "norms", "router", "experts"};
static_assert(std::size(kPartNames) == size_t(Part::Count));

}  // namespace

PartSet parse_parts(const std::string& list) {
  PartSet set;
  std::stringstream in(list);
  for (std::string name; std::getline(in, name, ',');) {
    if (name.empty()) continue;
    if (name == "ffn") name = "experts";
    bool known = false;
    for (size_t i = 0; i < size_t(Part::Count); ++i)
      if (name == kPartNames[i]) set.set(i), known = true;
    if (!known)
      throw UsageError("unknown part '" + name + "' (embeddings, attention, norms, router, experts or ffn)");
  }
  return set;
}

std::string parts_string(const PartSet& parts) {
  std::string s;
  for (size_t i = 0; i < size_t(Part::Count); ++i)
    if (parts[i]) s += (s.empty() ? "" : ",") + std::string(kPartNames[i]);
  return s;
}

template <class T>
Weights<T> zeros_like(Weights<T>& w, const ModelConfig& config, const PartSet& frozen) {
  Weights<T> z;
  auto zs = parameters(z, config);
  auto ws = parameters(w, config);
  for (size_t i = 0; i < ws.size(); ++i)
    if (!frozen[size_t(role_info(ws[i].tensor.id.role).part)]) zs[i].values->assign(ws[i].values->size(), T(0));
  return z;
}

template <class T>
std::unique_ptr<Checkpoint> as_checkpoint(Weights<T>& w, const ModelConfig& config, const Checkpoint* like) {
  std::vector<TensorInfo> infos;
  std::map<std::string, const std::vector<T>*> by_name;
  for (const auto& p : parameters(w, config)) {
    infos.push_back({p.tensor.name, DType::F32, p.tensor.shape});
    by_name[p.tensor.name] = p.values;
  }
  auto loader = [by_name](const TensorInfo& info) {
    const std::vector<T>& v = *by_name.at(info.name);
    return Tensor::from_f32(info.shape, std::vector<float>(v.begin(), v.end()));
  };
  return ComputedCheckpoint::with_files_of(like, config, std::move(infos), std::move(loader));
}

template Weights<float> zeros_like(Weights<float>&, const ModelConfig&, const PartSet&);
template Weights<double> zeros_like(Weights<double>&, const ModelConfig&, const PartSet&);
template std::unique_ptr<Checkpoint> as_checkpoint(Weights<float>&, const ModelConfig&, const Checkpoint*);
template std::unique_ptr<Checkpoint> as_checkpoint(Weights<double>&, const ModelConfig&, const Checkpoint*);

}  // namespace upcycle

#include "trainer/parameters.hpp"

#include <algorithm>
#include <map>
#include <sstream>

#include "core/error.hpp"

namespace upcycle {

namespace {

}  // namespace

template <class T>
std::vector<T>& tensor_slot(Weights<T>& w, const TensorId& id) {
  switch (id.role) {
    case Role::TokenEmbedding: return w.embedding;
    case Role::FinalNorm: return w.final_norm;
    case Role::LmHead: return w.lm_head;
    default: break;
  }
  LayerWeights<T>& l = w.layers.at(size_t(id.layer));
  switch (id.role) {
    case Role::AttnNorm: return l.attn_norm;
    case Role::Q: return l.q;
    case Role::K: return l.k;
    case Role::V: return l.v;
    case Role::O: return l.o;
    case Role::QBias: return l.q_bias;
    case Role::KBias: return l.k_bias;
    case Role::VBias: return l.v_bias;
    case Role::FfnNorm: return l.ffn_norm;
    case Role::Gate: return l.gate;
    case Role::Up: return l.up;
    case Role::Down: return l.down;
    case Role::Router: return l.router;
    case Role::ExpertGate: return l.expert_gate.at(size_t(id.expert));
    case Role::ExpertUp: return l.expert_up.at(size_t(id.expert));
    case Role::ExpertDown: return l.expert_down.at(size_t(id.expert));
    default: throw std::logic_error("tensor_slot: role without a buffer of its own");
  }
}

namespace {

const char* const kPartNames[] = {"embeddings", "attention", "norms", "router", "experts"};

}  // namespace

template <class T>
std::vector<Parameter<T>> parameters(Weights<T>& w, const ModelConfig& config) {
  // Sized first: the pointers handed out must not move when a later tensor is added.
  w.layers.resize(size_t(config.num_hidden_layers));
  for (auto& l : w.layers)
    for (auto* experts : {&l.expert_gate, &l.expert_up, &l.expert_down}) experts->resize(size_t(config.num_local_experts));
  std::vector<Parameter<T>> out;
  for (auto& e : expected_tensors(config, Scheme::HF)) {
    std::vector<T>* values = &tensor_slot(w, e.id);
    out.push_back({std::move(e), values});
  }
  return out;
}

Part part_of(Role role) {
  switch (role) {
    case Role::TokenEmbedding:
    case Role::LmHead: return Part::Embeddings;
    case Role::Q:
    case Role::K:
    case Role::V:
    case Role::O:
    case Role::QBias:
    case Role::KBias:
    case Role::VBias: return Part::Attention;
    case Role::AttnNorm:
    case Role::FfnNorm:
    case Role::FinalNorm: return Part::Norms;
    case Role::Router: return Part::Router;
    default: return Part::Experts;
  }
}

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

bool decays(Role role) {
  switch (role) {
    case Role::AttnNorm:
    case Role::FfnNorm:
    case Role::FinalNorm:
    case Role::QBias:
    case Role::KBias:
    case Role::VBias: return false;
    default: return true;
  }
}

template <class T>
Weights<T> zeros_like(Weights<T>& w, const ModelConfig& config, const PartSet& frozen) {
  Weights<T> z;
  auto zs = parameters(z, config);
  auto ws = parameters(w, config);
  for (size_t i = 0; i < ws.size(); ++i)
    if (!frozen[size_t(part_of(ws[i].tensor.id.role))]) zs[i].values->assign(ws[i].values->size(), T(0));
  return z;
}

template <class T>
void zero_fill(Weights<T>& w, const ModelConfig& config) {
  for (auto& p : parameters(w, config)) std::fill(p.values->begin(), p.values->end(), T(0));
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
  std::vector<std::filesystem::path> side;
  std::vector<GeneratedFile> generated;
  if (like) side = like->side_files(), generated = like->generated_files();
  return std::make_unique<ComputedCheckpoint>(config, std::move(infos), loader, std::move(side),
                                              std::move(generated));
}

template std::vector<float>& tensor_slot(Weights<float>&, const TensorId&);
template std::vector<double>& tensor_slot(Weights<double>&, const TensorId&);
template void zero_fill(Weights<float>&, const ModelConfig&);
template void zero_fill(Weights<double>&, const ModelConfig&);
template std::vector<Parameter<float>> parameters(Weights<float>&, const ModelConfig&);
template std::vector<Parameter<double>> parameters(Weights<double>&, const ModelConfig&);
template Weights<float> zeros_like(Weights<float>&, const ModelConfig&, const PartSet&);
template Weights<double> zeros_like(Weights<double>&, const ModelConfig&, const PartSet&);
template std::unique_ptr<Checkpoint> as_checkpoint(Weights<float>&, const ModelConfig&, const Checkpoint*);
template std::unique_ptr<Checkpoint> as_checkpoint(Weights<double>&, const ModelConfig&, const Checkpoint*);

}  // namespace upcycle

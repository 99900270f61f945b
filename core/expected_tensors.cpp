#include "core/expected_tensors.hpp"

#include <algorithm>
#include <stdexcept>
#include <unordered_set>

#include "core/error.hpp"

namespace upcycle {

namespace {

int64_t dim_size(Dim dim, const ModelConfig& c) {
  switch (dim) {
    case Dim::None: break;
    case Dim::One: return 1;
    case Dim::Vocab: return c.vocab_size;
    case Dim::Hidden: return c.hidden_size;
    case Dim::QDim: return c.q_dim();
    case Dim::KvDim: return c.kv_dim();
    case Dim::Ffn: return c.intermediate_size;
    case Dim::Experts: return c.num_local_experts;
    case Dim::ExpertFfn: return c.expert_intermediate_size();
    case Dim::TwoExpertFfn: return 2 * c.expert_intermediate_size();
    case Dim::SharedFfn: return c.shared_expert_intermediate_size;
    case Dim::HeadDim: return c.head_dim;
  }
  throw std::logic_error("dim_size: Dim::None has no size");
}

// A tensor's shape under this config, from its role's row.
Shape role_shape(Role role, const ModelConfig& config) {
  Shape shape;
  for (Dim d : role_info(role).shape)
    if (d != Dim::None) shape.push_back(dim_size(d, config));
  return shape;
}

// Buffers transformers recomputes and skips when loading (older Llama checkpoints store them).
bool ignored_on_load(const std::string& name) {
  const std::string suffix = ".rotary_emb.inv_freq";
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Tensors the config does not account for (a layer past num_hidden_layers, an expert past
// num_local_experts, a head the config ties, a name of no known role): a model built from the
// config would drop them without a word, so they are refused, the first few named.
void refuse_unaccounted(const Checkpoint& ckpt, const std::vector<ExpectedTensor>& expected) {
  std::unordered_set<std::string> known;
  for (const ExpectedTensor& e : expected) known.insert(e.name);
  std::vector<std::string> extra;
  for (const TensorInfo& t : ckpt.tensors())
    if (!known.count(t.name) && !ignored_on_load(t.name)) extra.push_back(t.name);
  if (extra.empty()) return;
  constexpr size_t kNamed = 4;
  std::string names;
  for (size_t i = 0; i < std::min(extra.size(), kNamed); ++i) names += (i ? ", '" : "'") + extra[i] + "'";
  if (extra.size() > kNamed) names += " and " + std::to_string(extra.size() - kNamed) + " more";
  const ModelConfig& c = ckpt.config();
  std::string why = std::to_string(extra.size()) + " tensor(s) the config does not account for (" +
                    std::to_string(c.num_hidden_layers) + " layers";
  if (c.is_moe()) why += ", " + std::to_string(c.num_local_experts) + " experts";
  if (c.tie_word_embeddings) why += ", output tied to the embeddings";
  throw InputError(ckpt.path(), why + "), which a model built from it would ignore: " + names);
}

}  // namespace

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c, std::optional<Scheme> named) {
  const Scheme scheme = named.value_or(default_scheme(c));
  std::vector<ExpectedTensor> out;
  auto add = [&](Role role, int layer = -1, int expert = -1) {
    TensorId id{role, layer, expert};
    out.push_back({id, tensor_name(id, scheme), role_shape(role, c)});
  };
  add(Role::TokenEmbedding);
  for (int l = 0; l < int(c.num_hidden_layers); ++l) {
    for (Role r : {Role::AttnNorm, Role::Q, Role::K, Role::V, Role::O}) add(r, l);
    if (c.attention_bias)
      for (Role r : {Role::QBias, Role::KBias, Role::VBias}) add(r, l);
    if (c.qk_norm())
      for (Role r : {Role::QNorm, Role::KNorm}) add(r, l);
    add(Role::FfnNorm, l);
    if (!c.is_moe()) {
      for (Role r : {Role::Gate, Role::Up, Role::Down}) add(r, l);
      continue;
    }
    add(Role::Router, l);
    if (scheme == Scheme::HFFused) {
      for (Role r : {Role::ExpertsGateUp, Role::ExpertsDown}) add(r, l);
    } else {
      for (int e = 0; e < int(c.num_local_experts); ++e)
        for (Role r : {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown}) add(r, l, e);
    }
    if (c.has_shared_expert())
      for (Role r : {Role::SharedGate, Role::SharedUp, Role::SharedDown, Role::SharedRouter}) add(r, l);
  }
  add(Role::FinalNorm);
  if (!c.tie_word_embeddings) add(Role::LmHead);
  return out;
}

Scheme detect_scheme(const ModelConfig& config, const std::vector<TensorInfo>& tensors) {
  for (const auto& t : tensors)
    if (auto id = parse_tensor_name(t.name, Scheme::HFFused); id && id->role == Role::ExpertsGateUp)
      return Scheme::HFFused;
  return default_scheme(config);
}

Scheme default_scheme(const ModelConfig& config) {
  return config.model_type == "qwen2_moe" || config.model_type == "qwen3_moe" ? Scheme::Qwen2Moe : Scheme::HF;
}

void check_tensors_match_config(const Checkpoint& ckpt) {
  const Scheme scheme = detect_scheme(ckpt.config(), ckpt.tensors());
  const std::vector<ExpectedTensor> expected = expected_tensors(ckpt.config(), scheme);
  for (const ExpectedTensor& want : expected) {
    const TensorInfo* have = ckpt.find(want.name);
    require(have != nullptr, ckpt.path(), "tensor '" + want.name + "'", "required by the config but missing");
    require(have->shape == want.shape, ckpt.path(), "tensor '" + want.name + "'",
            "shape " + shape_string(have->shape) + " but the config implies " + shape_string(want.shape));
  }
  refuse_unaccounted(ckpt, expected);
}

}  // namespace upcycle

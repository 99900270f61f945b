// Loading a checkpoint's weights into f32 buffers by role, and reading rope_scaling.
#include <string>

#include "core/error.hpp"
#include "core/layout.hpp"
#include "trainer/model.hpp"

namespace upcycle {

namespace {

template <class T>
std::vector<T> values_of(const Tensor& t) {
  const Tensor f = t.to(DType::F32);
  const auto s = f.span<float>();
  return {s.begin(), s.end()};
}

// Matrix e of a stacked [E, R, C] tensor, rows [first, first + rows): [rows, C].
template <class T>
std::vector<T> slice(const std::vector<T>& all, const Shape& shape, int64_t e, int64_t first, int64_t rows) {
  const int64_t C = shape[2];
  const auto begin = all.begin() + (e * shape[1] + first) * C;
  return {begin, begin + rows * C};
}

// The fused experts split into per-expert matrices: gate_up [E, 2I, H] is w1 rows then w3 rows;
// down [E, H, I].
template <class T>
void place_fused(LayerWeights<T>& l, Role role, const std::vector<T>& all, const Shape& shape) {
  const int64_t E = shape[0];
  for (int64_t e = 0; e < E; ++e) {
    if (role == Role::ExpertsDown) {
      l.expert_down.push_back(slice(all, shape, e, 0, shape[1]));
      continue;
    }
    const int64_t I = shape[1] / 2;
    l.expert_gate.push_back(slice(all, shape, e, 0, I));
    l.expert_up.push_back(slice(all, shape, e, I, I));
  }
}

// The buffer of one tensor that a layer holds whole.
template <class T>
std::vector<T>& layer_slot(LayerWeights<T>& l, Role role) {
  switch (role) {
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
    default: throw std::logic_error("layer_slot: role without a buffer of its own");
  }
}

template <class T>
void place(Weights<T>& w, const TensorId& id, std::vector<T> values, const Shape& shape) {
  switch (id.role) {
    case Role::TokenEmbedding: w.embedding = std::move(values); return;
    case Role::FinalNorm: w.final_norm = std::move(values); return;
    case Role::LmHead: w.lm_head = std::move(values); return;
    default: break;
  }
  LayerWeights<T>& l = w.layers.at(size_t(id.layer));
  switch (id.role) {
    case Role::ExpertGate: l.expert_gate.push_back(std::move(values)); return;
    case Role::ExpertUp: l.expert_up.push_back(std::move(values)); return;
    case Role::ExpertDown: l.expert_down.push_back(std::move(values)); return;
    case Role::ExpertsGateUp:
    case Role::ExpertsDown: place_fused(l, id.role, values, shape); return;
    default: layer_slot(l, id.role) = std::move(values);
  }
}

}  // namespace

template <class T>
Weights<T> load_weights(const Checkpoint& ckpt) {
  const ModelConfig& c = ckpt.config();
  require(c.model_type != "qwen2_moe", ckpt.path(),
          "model_type qwen2_moe: the forward pass computes llama, mistral, qwen2 and mixtral");
  Weights<T> w;
  w.layers.resize(size_t(c.num_hidden_layers));
  // expected_tensors lists experts in index order, so per-expert buffers arrive in order.
  for (const auto& e : expected_tensors(c, detect_scheme(c, ckpt.tensors()))) {
    require(ckpt.find(e.name) != nullptr, ckpt.path(), e.name, "missing");
    const Tensor t = ckpt.load(e.name);
    require(t.shape() == e.shape, ckpt.path(), e.name,
            "shape " + shape_string(t.shape()) + ", expected " + shape_string(e.shape));
    place(w, e.id, values_of<T>(t), e.shape);
  }
  return w;
}

template Weights<float> load_weights(const Checkpoint&);
template Weights<double> load_weights(const Checkpoint&);

ops::RopeScaling rope_scaling(const ModelConfig& config, const std::filesystem::path& source) {
  ops::RopeScaling s;
  const auto& j = config.rope_scaling;
  if (j.is_null()) return s;
  auto number = [&](const char* key, double fallback) {
    if (!j.contains(key)) return fallback;
    require(j[key].is_number(), source, "rope_scaling", std::string("'") + key + "' must be a number");
    return j[key].get<double>();
  };
  const char* type_key = j.contains("rope_type") ? "rope_type" : "type";
  require(j.contains(type_key) && j[type_key].is_string(), source, "rope_scaling", "no 'rope_type' string");
  const std::string type = j[type_key].get<std::string>();
  if (type == "default") return s;
  s.factor = number("factor", s.factor);
  require(s.factor > 0, source, "rope_scaling", "'factor' must be positive");
  if (type == "linear") {
    s.type = ops::RopeScaling::Type::Linear;
    return s;
  }
  require(type == "llama3", source, "rope_scaling",
          "type '" + type + "' is not supported (default, linear, llama3)");
  s.type = ops::RopeScaling::Type::Llama3;
  s.low_freq_factor = number("low_freq_factor", s.low_freq_factor);
  s.high_freq_factor = number("high_freq_factor", s.high_freq_factor);
  s.original_max_position_embeddings =
      number("original_max_position_embeddings", s.original_max_position_embeddings);
  require(s.high_freq_factor > s.low_freq_factor, source, "rope_scaling",
          "'high_freq_factor' must exceed 'low_freq_factor'");
  return s;
}

}  // namespace upcycle

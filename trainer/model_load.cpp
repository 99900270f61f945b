// Loading a checkpoint's weights into f32 buffers by role (and an engine over them), and reading
// rope_scaling.
#include <string>

#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "trainer/engine.hpp"
#include "trainer/model.hpp"
#include "trainer/parameters.hpp"

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
  for (size_t e = 0; e < size_t(shape[0]); ++e) {
    if (role == Role::ExpertsDown) {
      l.expert_down.at(e) = slice(all, shape, int64_t(e), 0, shape[1]);
      continue;
    }
    const int64_t I = shape[1] / 2;
    l.expert_gate.at(e) = slice(all, shape, int64_t(e), 0, I);
    l.expert_up.at(e) = slice(all, shape, int64_t(e), I, I);
  }
}

// A tensor's values into its buffer; fused experts split into the per-expert buffers.
template <class T>
void place(Weights<T>& w, const TensorId& id, std::vector<T> values, const Shape& shape) {
  if (id.role == Role::ExpertsGateUp || id.role == Role::ExpertsDown)
    place_fused(w.layers.at(size_t(id.layer)), id.role, values, shape);
  else
    tensor_slot(w, id) = std::move(values);
}

}  // namespace

template <class T>
Weights<T> load_weights(const Checkpoint& ckpt) {
  const ModelConfig& c = ckpt.config();
  require(c.model_type != "qwen2_moe", ckpt.path(),
          "model_type qwen2_moe: the forward pass computes llama, mistral, qwen2 and mixtral");
  Weights<T> w;
  parameters(w, c);  // lays out the layers and the per-expert buffers
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
  return parse_rope_scaling(config.rope_scaling, source);
}

std::unique_ptr<Engine> load_engine(const Checkpoint& ckpt, EngineFactory make, std::optional<TrainSetup> training) {
  return make({ckpt.config(), load_weights<float>(ckpt), ckpt.path(), std::move(training)});
}

}  // namespace upcycle

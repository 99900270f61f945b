#include "trainer/stored_weights.hpp"

#include <map>
#include <memory>
#include <stdexcept>

#include <Eigen/Dense>

#include "core/error.hpp"
#include "trainer/load_by_role.hpp"
#include "trainer/lora_terms.hpp"
#include "trainer/parameters.hpp"

namespace upcycle {

ops::StoredMatrix StoredWeight::matrix() const {
  if (tensor_.rank() < 1 || !ops::stored_matmul_supports(tensor_.dtype()))
    throw std::logic_error("StoredWeight: a " + std::string(dtype_name(tensor_.dtype())) + " tensor of shape " +
                           shape_string(tensor_.shape()) + " is not a matrix the stored matmul reads");
  const int64_t rows = tensor_.dim(0);
  return {tensor_.dtype(), tensor_.bytes().data(), rows, rows ? int64_t(tensor_.numel()) / rows : 0, bf16_products_,
          bf16_copy_};
}

StoredWeight StoredWeight::master(const std::vector<float>& values, const Shape& shape) {
  const auto* bytes = reinterpret_cast<const std::byte*>(values.data());
  StoredWeight out(Tensor::borrowed(DType::F32, shape, std::shared_ptr<const std::byte>(bytes, [](const std::byte*) {})));
  out.trained_ = true;
  return out;
}

StoredWeight StoredWeight::slice(const Shape& shape, int64_t e, int64_t first, int64_t rows) const {
  const size_t row_bytes = ops::stored_row_bytes(tensor_.dtype(), shape[2]);
  const size_t offset = size_t(e * shape[1] + first) * row_bytes;
  StoredWeight out = *this;
  out.tensor_ = tensor_.part(offset, {rows, shape[2]});
  if (bf16_copy_) out.bf16_copy_ = bf16_copy_ + (e * shape[1] + first) * shape[2];
  return out;
}

StoredWeight StoredWeight::with_low_rank(std::shared_ptr<const LowRank> term) const {
  StoredWeight out = *this;
  out.low_rank_ = std::move(term);
  return out;
}

Tensor StoredWeight::merged() const {
  if (!low_rank_) return tensor_;
  const LowRank& t = *low_rank_;
  const int64_t O = tensor_.dim(0), I = int64_t(tensor_.numel()) / O;
  using Rows = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  std::vector<float> w = tensor_.to_f32_vector();
  const Eigen::Map<const Rows> a(t.a.data(), t.rank, I), b(t.b.data(), O, t.rank);
  Eigen::Map<Rows>(w.data(), O, I).noalias() += t.scale * (b * a);  // [O,I] += scale · B[O,r]·A[r,I]
  return Tensor::from_f32(tensor_.shape(), std::move(w));
}

StoredWeight StoredWeight::in_bf16(std::span<const uint16_t> copy) const {
  if (!copy.empty() && (tensor_.dtype() != DType::F32 || copy.size() != size()))
    throw std::logic_error("StoredWeight::in_bf16: a bf16 copy of " + std::to_string(copy.size()) +
                           " values for a " + std::string(dtype_name(tensor_.dtype())) + " tensor of " +
                           std::to_string(size()));
  StoredWeight out = *this;
  out.bf16_products_ = true;
  out.bf16_copy_ = copy.empty() ? nullptr : copy.data();
  return out;
}

StoredWeight StoredWeight::streamed() const {
  StoredWeight out = *this;
  out.streamed_ = true;
  return out;
}

Precision parse_precision(const std::string& name) {
  if (name == "f32") return Precision::F32;
  if (name == "bf16") return Precision::BF16;
  throw UsageError("'" + name + "' is not f32 or bf16");
}

std::string precision_name(Precision p) { return p == Precision::F32 ? "f32" : "bf16"; }

namespace {

// t as bf16, its mapped pages (if any) dropped from memory once read.
Tensor to_bf16(const Tensor& t) {
  Tensor out = t.to(DType::BF16);
  t.release(0, t.numel());
  return out;
}

}  // namespace

StoredWeights load_stored_weights(const Checkpoint& ckpt, Precision precision) {
  const bool bf16 = precision == Precision::BF16;
  auto load = [&](const std::string& name) { return ckpt.load_stored(name); };
  // Matrices stay as stored (under bf16, f32 and f16 ones become bf16); vectors and the router
  // (and the shared expert's gate row) become f32.
  auto keep = [&](const Tensor& t, Role role) {
    if (t.rank() < 2 || role == Role::Router || role == Role::SharedRouter || !ops::stored_matmul_supports(t.dtype()))
      return StoredWeight(t.to(DType::F32));
    if (bf16 && (t.dtype() == DType::F32 || t.dtype() == DType::F16)) return StoredWeight(to_bf16(t), true);
    return StoredWeight(t, bf16);
  };
  auto slice = [](const StoredWeight& all, const Shape& shape, int64_t e, int64_t first, int64_t rows) {
    return all.slice(shape, e, first, rows);
  };
  return load_by_role<StoredWeight>(ckpt, load, keep, slice);
}

StoredWeights load_streamed_weights(const Checkpoint& ckpt, Precision precision) {
  StoredWeights w = load_stored_weights(ckpt, Precision::F32);
  const bool bf16 = precision == Precision::BF16;
  auto matrix = [&](StoredWeight& t, bool streamed) {
    if (t.empty()) return;
    if (bf16) t = t.in_bf16();
    if (streamed) t = t.streamed();
  };
  matrix(w.lm_head, false);
  if (w.lm_head.empty()) matrix(w.embedding, false);  // the tied head
  for (auto& l : w.layers) {
    for (StoredWeight* t : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down, &l.shared_gate, &l.shared_up, &l.shared_down})
      matrix(*t, true);
    for (auto* experts : {&l.expert_gate, &l.expert_up, &l.expert_down})
      for (StoredWeight& t : *experts) matrix(t, true);
  }
  return w;
}

std::unique_ptr<Checkpoint> as_checkpoint(const StoredWeights& weights, const ModelConfig& config,
                                          const Checkpoint* like) {
  StoredWeights w = weights;  // shares the tensors
  std::vector<TensorInfo> infos;
  std::map<std::string, StoredWeight> by_name;
  for (const auto& p : parameters(w, config)) {
    const DType dtype = p.values->low_rank() ? DType::F32 : p.values->dtype();
    infos.push_back({p.tensor.name, dtype, p.tensor.shape});
    by_name.emplace(p.tensor.name, *p.values);
  }
  auto loader = [by_name = std::move(by_name)](const TensorInfo& info) {
    return by_name.at(info.name).merged().reshaped(info.shape);
  };
  return ComputedCheckpoint::with_files_of(like, config, std::move(infos), std::move(loader));
}

ModelConfig adapted_config(const ModelConfig& base, const LoraAdapter& adapter, const std::filesystem::path& source) {
  const LoraConfig& c = adapter.config;
  return c.is_moe() ? lora_moe_config(base, c.experts, c.top_k, c.aux_loss_coef, source) : base;
}

std::vector<std::shared_ptr<LowRank>> apply_adapter(StoredWeights& weights, const LoraAdapter& adapter) {
  return attach_lora<LowRank>(
      weights, adapter,
      [](LowRank& t, const LoraModule& m) {
        t.a = m.a.to_f32_vector();
        t.b = m.b.to_f32_vector();
      },
      [](const Tensor& router) { return StoredWeight(router.to(DType::F32)); });
}

bool experts_share_base(const LayerWeightsOf<StoredWeight>& layer) {
  if (layer.expert_gate.empty() || layer.expert_gate[0].trained()) return false;
  for (const auto* experts : {&layer.expert_gate, &layer.expert_up, &layer.expert_down})
    for (const StoredWeight& e : *experts)
      if (e.tensor().bytes().data() != experts->front().tensor().bytes().data()) return false;
  return true;
}

std::unique_ptr<Checkpoint> merge_adapter(const Checkpoint& base, const std::filesystem::path& adapter) {
  StoredWeights weights = load_stored_weights(base);
  const LoraAdapter a = read_peft_adapter(adapter, base.config());
  apply_adapter(weights, a);
  return as_checkpoint(weights, adapted_config(base.config(), a, adapter / "adapter_config.json"), &base);
}

}  // namespace upcycle

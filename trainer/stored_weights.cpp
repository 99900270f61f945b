#include "trainer/stored_weights.hpp"

#include <memory>
#include <stdexcept>

#include "core/error.hpp"
#include "trainer/load_by_role.hpp"
#include "trainer/parameters.hpp"

namespace upcycle {

ops::StoredMatrix StoredWeight::matrix() const {
  if (tensor_.rank() < 1 || !ops::stored_matmul_supports(tensor_.dtype()))
    throw std::logic_error("StoredWeight: a " + std::string(dtype_name(tensor_.dtype())) + " tensor of shape " +
                           shape_string(tensor_.shape()) + " is not a matrix the stored matmul reads");
  const int64_t rows = tensor_.dim(0);
  return {tensor_.dtype(), tensor_.bytes().data(), rows, rows ? int64_t(tensor_.numel()) / rows : 0, bf16_products_};
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
  return out;
}

StoredWeight StoredWeight::with_low_rank(std::shared_ptr<const LowRank> term) const {
  StoredWeight out = *this;
  out.low_rank_ = std::move(term);
  return out;
}

StoredWeight StoredWeight::in_bf16() const {
  StoredWeight out = *this;
  out.bf16_products_ = true;
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
  // become f32.
  auto keep = [&](const Tensor& t, Role role) {
    if (t.rank() < 2 || role == Role::Router || !ops::stored_matmul_supports(t.dtype()))
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
    for (StoredWeight* t : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) matrix(*t, true);
    for (auto* experts : {&l.expert_gate, &l.expert_up, &l.expert_down})
      for (StoredWeight& t : *experts) matrix(t, true);
  }
  return w;
}

void apply_adapter(StoredWeights& weights, const LoraAdapter& adapter) {
  for (const LoraModule& m : adapter.modules) {
    auto term = std::make_shared<LowRank>();
    term->a = m.a.to_f32_vector();
    term->b = m.b.to_f32_vector();
    term->rank = adapter.config.rank;
    term->scale = float(adapter.config.scaling());
    StoredWeight& w = tensor_slot(weights, {lora_module_role(m.module), int(m.layer)});
    w = w.with_low_rank(std::move(term));
  }
}

}  // namespace upcycle

#include "pool/ffn_source.hpp"

#include <algorithm>
#include <stdexcept>

#include "core/error.hpp"
#include "core/simd.hpp"

namespace upcycle::pool {

namespace {

// The fields that fix every tensor's shape and meaning.
void check_same_shape(const Checkpoint& a, const Checkpoint& b) {
  const ModelConfig &x = a.config(), &y = b.config();
  const bool same = x.model_type == y.model_type && x.vocab_size == y.vocab_size && x.hidden_size == y.hidden_size &&
                    x.intermediate_size == y.intermediate_size && x.num_hidden_layers == y.num_hidden_layers &&
                    x.num_attention_heads == y.num_attention_heads && x.num_key_value_heads == y.num_key_value_heads &&
                    x.head_dim == y.head_dim && x.tie_word_embeddings == y.tie_word_embeddings;
  require(same, b.path(),
          "is not the same architecture and shape as " + a.path().string() + " (model type, vocabulary, hidden, " +
              "intermediate, layers, heads and tied embeddings must all agree)");
}

}  // namespace

FfnSource::FfnSource(std::vector<const Checkpoint*> checkpoints, const Checkpoint* base)
    : checkpoints_(std::move(checkpoints)), base_(base) {
  if (checkpoints_.empty()) throw std::invalid_argument("FfnSource: no checkpoints");
  for (const Checkpoint* c : checkpoints_) {
    require(!c->config().is_moe(), c->path(), "is already an MoE model: the checkpoints must be dense");
    check_same_shape(*checkpoints_[0], *c);
  }
  if (base_) {
    require(!base_->config().is_moe(), base_->path(), "is an MoE model: the base must be dense");
    check_same_shape(*checkpoints_[0], *base_);
  }
}

std::string FfnSource::key(int layer, Role role) { return tensor_name({role, layer}, Scheme::HF); }

Tensor FfnSource::tensor(size_t k, int layer, Role role) const { return checkpoints_.at(k)->load(key(layer, role)); }

Tensor FfnSource::base_tensor(int layer, Role role) const {
  if (!base_) throw std::logic_error("FfnSource::base_tensor: no base model (the base is the checkpoints' mean)");
  return base_->load(key(layer, role));
}

UPCYCLE_SIMD_CLONES
void FfnSource::mean(std::span<const std::span<const float>> tensors, std::span<float> out) {
  for (const auto& x : tensors)
    if (x.size() != out.size()) throw std::invalid_argument("FfnSource::mean: lengths differ");
  const double scale = double(tensors.size());
  constexpr size_t kChunk = 1024;
  double sum[kChunk];
  for (size_t lo = 0; lo < out.size(); lo += kChunk) {
    const size_t n = std::min(kChunk, out.size() - lo);
    std::fill_n(sum, n, 0.0);
    for (const auto& x : tensors)
      for (size_t i = 0; i < n; ++i) sum[i] += x[lo + i];
    for (size_t i = 0; i < n; ++i) out[lo + i] = float(sum[i] / scale);
  }
}

}  // namespace upcycle::pool

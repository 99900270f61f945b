// The inference model's weights: every matrix as the checkpoint stores it (f32, bf16, f16 or
// GGUF's Q8_0, Q4_0, Q4_1, Q4_K and Q6_K; a view of the mapped file where the format allows),
// never widened whole, so that a bf16 model takes half the memory of f32 and Q8_0 about a quarter,
// and decoding, which reads every weight once per token, reads that much less. Vectors (norms,
// biases) and the router, which the ops read as floats and which are small, are held in f32.
// Under Precision::BF16 the f32 and f16 matrices become bf16 (a copy, the mapped pages it was read
// from dropped behind it) multiplied in bf16 (ops::StoredMatrix::bf16_products); quantized ones
// stay as they are.
#pragma once
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/checkpoint.hpp"
#include "formats/peft_adapter.hpp"
#include "trainer/ops/lora.hpp"
#include "trainer/ops/stored_matmul.hpp"
#include "trainer/weights.hpp"

namespace upcycle {

// A LoRA adapter's term on one matrix W [O,I]: W + scale·B·A, applied unmerged (ops/lora.hpp).
struct LowRank {
  std::vector<float> a, b;  // A [rank, I], B [O, rank]
  int64_t rank = 0;
  float scale = 0;
  float *d_a = nullptr, *d_b = nullptr;  // their gradients, added into by the backward (null: frozen)
  ops::LoraDropout dropout;  // on the term's input; set by a training engine for each micro-batch
};

// One weight tensor, shared (copies are cheap and read the same bytes).
class StoredWeight {
 public:
  StoredWeight() = default;
  explicit StoredWeight(Tensor t, bool bf16_products = false) : tensor_(std::move(t)), bf16_products_(bf16_products) {}
  // A trained tensor: a view of its f32 master (which the optimizer updates in place, and which
  // must outlive it and keep its size). The backend computes with it as the f32 model does.
  static StoredWeight master(const std::vector<float>& values, const Shape& shape);

  bool empty() const { return tensor_.numel() == 0; }
  size_t size() const { return size_t(tensor_.numel()); }
  DType dtype() const { return tensor_.dtype(); }
  uint64_t nbytes() const { return tensor_.nbytes(); }
  bool trained() const { return trained_; }
  const Tensor& tensor() const { return tensor_; }
  // Its values widened to f32 (a copy).
  std::vector<float> widened() const { return tensor_.to_f32_vector(); }
  // The f32 values; std::logic_error for a tensor kept in another dtype.
  const float* data() const { return tensor_.span<float>().data(); }
  // As a matrix [shape[0], the rest]; std::logic_error for a dtype the stored matmul cannot read.
  ops::StoredMatrix matrix() const;
  // Rows [first, first + rows) of matrix e of a stacked [E, R, C] tensor (fused experts), a view.
  StoredWeight slice(const Shape& shape, int64_t e, int64_t first, int64_t rows) const;

  // The same weight streamed: each use (done()) drops its mapped pages from this process's
  // memory (they stay in the page cache), so a model larger than memory is resident a layer at a
  // time. For a model read a few times over, not for decoding, which reads every weight per token.
  StoredWeight streamed() const;
  // The same multiplied in bf16 (ops::StoredMatrix::bf16_products); an f32 weight's values
  // rounded to bf16 in `copy` where given (borrowed, kept in step by its owner: a trained
  // master's, which AdamW updates), so that its products read them whole.
  StoredWeight in_bf16(std::span<const uint16_t> copy = {}) const;
  // The same with an adapter's term added to its products (null: none).
  StoredWeight with_low_rank(std::shared_ptr<const LowRank> term) const;
  const LowRank* low_rank() const { return low_rank_.get(); }
  // The tensor as stored, or with a low-rank term, W + scale·B·A in f32 (merged).
  Tensor merged() const;
  // Called by the ops after each use.
  void done() const {
    if (streamed_) tensor_.release(0, tensor_.numel());
  }

 private:
  Tensor tensor_;
  bool bf16_products_ = false;
  const uint16_t* bf16_copy_ = nullptr;  // the values rounded to bf16 (in_bf16)
  bool streamed_ = false;
  bool trained_ = false;
  std::shared_ptr<const LowRank> low_rank_;
};

// What a model computes in on the CPU: f32 (the default, the same bits on every run), or bf16
// (weights and activations in bf16, sums in f32, on oneDNN: AMX or AVX512-BF16 where the CPU has
// them; the same bits for a fixed CPU and thread count).
enum class Precision { F32, BF16 };
Precision parse_precision(const std::string& name);  // "f32" or "bf16"; UsageError otherwise
std::string precision_name(Precision p);

using StoredWeights = WeightsOf<StoredWeight>;

// Every tensor of the checkpoint by role (fused experts split into views of each expert's rows).
// InputError naming the file and tensor when one is missing or misshapen, or the model type is
// not one the forward pass computes.
StoredWeights load_stored_weights(const Checkpoint& ckpt, Precision precision = Precision::F32);

// For a model read whole a few times over (the router stage): every tensor as load_stored_weights
// gives it under F32 (nothing converted: under BF16 the products round the weights to bf16 a
// panel at a time), every layer's matrices streamed (StoredWeight::streamed); the embedding and
// head, read on every pass, stay resident.
StoredWeights load_streamed_weights(const Checkpoint& ckpt, Precision precision);

// The weights as a checkpoint of Hugging Face names, each tensor merged() when read (as stored,
// or with its adapter's term merged in f32), with `like`'s side and generated files.
std::unique_ptr<Checkpoint> as_checkpoint(const StoredWeights& weights, const ModelConfig& config,
                                          const Checkpoint* like = nullptr);

// The config a base computes with under `adapter`: the base's own, or for a MixLoRA adapter the
// MoE of its experts (lora_moe_config: a Mixtral or a Qwen3-MoE; InputError naming `source` for a
// base it cannot be).
ModelConfig adapted_config(const ModelConfig& base, const LoraAdapter& adapter, const std::filesystem::path& source);

// Each module of a PEFT LoRA adapter (read against this model: formats/peft_adapter.hpp) added
// to its matrix as an unmerged low-rank term, A and B widened to f32; the terms, in the
// adapter's module order (for a training engine to give them gradients and dropout). A MixLoRA
// adapter makes the dense base its LoRA-MoE (of adapted_config): each layer's experts are views
// of its gate, up and down, each with the expert's own terms, and its router is the adapter's
// (f32); its attention terms are shared.
std::vector<std::shared_ptr<LowRank>> apply_adapter(StoredWeights& weights, const LoraAdapter& adapter);

// Whether a layer's experts are one frozen base FFN that every expert shares, each with its own
// low-rank terms or none (a LoRA-MoE's, or a sparse upcycling's copies read in place): the stored
// backend runs those by ops::lora_moe, the base products once per token.
bool experts_share_base(const LayerWeightsOf<StoredWeight>& layer);

// `base` with the PEFT LoRA adapter folder `adapter` merged into its matrices (W + scale·B·A in
// f32; every other tensor as stored), as a checkpoint of Hugging Face names read tensor by tensor
// when written (export --merge-adapter): a MixLoRA folder gives the Mixtral whose expert e has
// W + scale·B_e·A_e. `base` must outlive it. InputError naming the adapter's
// file when it does not fit the model.
std::unique_ptr<Checkpoint> merge_adapter(const Checkpoint& base, const std::filesystem::path& adapter);

}  // namespace upcycle

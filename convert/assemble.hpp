// MoE assembly (UpIT's stage 4, and the baselines'): an MoE (Mixtral, Qwen2-MoE or Qwen3-MoE, by
// the checkpoints' family) whose every FFN is an MoE block
// over the pool's experts and whose shared weights (embeddings, attention, norms, head) are
// merged across the checkpoints, presented as a Checkpoint that computes each tensor a block at
// a time when a writer asks for it, so the conversion streams: memory of a few blocks per thread
// whatever the model's size.
#pragma once
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pool/expert_pool.hpp"

namespace upcycle {

// Where Qwen2-MoE's shared expert comes from. Zero: the checkpoints' mean gate and up with a zero
// down, so that it adds exactly nothing until tuned (the MoE computes what its routed experts do);
// Mean: the checkpoints' mean FFN; Base: the base model's; Checkpoint: checkpoint `checkpoint`'s.
struct SharedExpertSource {
  enum class From { Zero, Mean, Base, Checkpoint };
  From from = From::Zero;
  int checkpoint = 0;
};
// "zero", "mean", "base" or "checkpoint:N"; nullopt for anything else.
std::optional<SharedExpertSource> parse_shared_expert(const std::string& text);

struct AssemblyOptions {
  int top_k = 2;
  bool norm_topk_prob = true;               // the qwen MoEs' (MoeShapeOptions)
  SharedExpertSource shared_expert;         // qwen2_moe's; its gate's row is normal(0, 0.02) from the seed
  bool fused = false;                       // transformers v5's fused experts ([E, 2I, H], [E, H, I])
  double aux_loss_coef = 0.01;              // router_aux_loss_coef of the output config
  std::optional<int> shared_from;           // take the shared weights from this checkpoint, or
  merge::Options shared_merge;              // merge them (default: the mean)
  merge::Options child_merge{merge::Method::Dare};  // how the pool's children were made
  uint64_t seed = 0;                        // the random router's
  // Computed tensors (children, re-drawn experts, element-wise shared merges) are made this many
  // elements at a time (rounded up to whole quantization blocks).
  uint64_t block_elements = pool::PoolTensor::kBlockElements;
  // Router rows per layer [E·H], when given; else normal(0, 0.02) from the seed.
  std::vector<std::vector<float>> routers;
};

// The MoE's config (upcycled_config): every field of checkpoint 0's carried over, with its MoE
// family's model_type, the pool size as experts, top_k, router_aux_loss_coef and norm_topk_prob.
// InputError when the checkpoints' family makes no MoE or top_k is out of range.
ModelConfig moe_config(const pool::FfnSource& source, int experts, const AssemblyOptions& opts);

// Side files: checkpoint 0's (tokenizer, chat template), plus `extra` generated ones.
std::unique_ptr<Checkpoint> assemble_moe(const pool::FfnSource& source, const pool::Pool& pool,
                                         const AssemblyOptions& opts, std::vector<GeneratedFile> extra = {});

// A pool still being searched: its size, its first experts (the checkpoints, known before the
// search; every later one is computed), and the whole pool once the search ends.
struct PendingPool {
  size_t size = 0;
  pool::Pool known;
  std::shared_future<pool::Pool> whole;
};

// The same while the search runs: the tensors of experts past `known` (and fused expert tensors)
// wait for it (Checkpoint::waits), and a writer writes the others meanwhile. std::logic_error
// when the whole pool does not start with `known` or has another size.
std::unique_ptr<Checkpoint> assemble_moe(const pool::FfnSource& source, PendingPool pool,
                                         const AssemblyOptions& opts, std::vector<GeneratedFile> extra = {});

}  // namespace upcycle

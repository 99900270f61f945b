// MoE assembly (UpIT's stage 4, and the baselines'): a Mixtral whose every FFN is an MoE block
// over the pool's experts and whose shared weights (embeddings, attention, norms, head) are
// merged across the checkpoints, presented as a Checkpoint that computes each tensor a block at
// a time when a writer asks for it, so the conversion streams: memory of a few blocks per thread
// whatever the model's size.
#pragma once
#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <vector>

#include "pool/expert_pool.hpp"

namespace upcycle {

struct AssemblyOptions {
  int top_k = 2;
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

// The Mixtral config: every field of checkpoint 0's carried over, with model_type mixtral,
// num_local_experts = pool size, num_experts_per_tok = top_k, router_aux_loss_coef.
// InputError when the checkpoints are not llama or mistral models (Mixtral's attention has no
// biases, so qwen2 does not carry over) or top_k is out of range.
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

#include "cuda/plugin/bench.hpp"

#include <chrono>
#include <functional>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "core/error.hpp"
#include "core/random.hpp"
#include "cuda/model.hpp"
#include "cuda/optimizer.hpp"
#include "formats/random_init.hpp"
#include "trainer/flops.hpp"

namespace upcycle {

namespace {

using Json = nlohmann::ordered_json;

// Mixtral when `experts` > 0 (top-2, aux coef 0.01), Llama otherwise.
ModelConfig shape(const std::string& name, int64_t vocab, int64_t hidden, int64_t inter, int64_t layers,
                  int64_t heads, int64_t kv_heads, int64_t experts, int64_t positions) {
  Json j = {{"model_type", experts ? "mixtral" : "llama"}, {"vocab_size", vocab},
            {"hidden_size", hidden},                      {"intermediate_size", inter},
            {"num_hidden_layers", layers},                {"num_attention_heads", heads},
            {"num_key_value_heads", kv_heads},            {"max_position_embeddings", positions},
            {"rms_norm_eps", 1e-5},                       {"rope_theta", 10000.0},
            {"tie_word_embeddings", false}};
  if (experts) j["num_local_experts"] = experts, j["num_experts_per_tok"] = 2, j["router_aux_loss_coef"] = 0.01;
  return ModelConfig::from_json(j, "bench shape " + name);
}

ModelConfig shape_config(const std::string& name, int64_t seq_len) {
  if (name == "smollm2") return shape(name, 49152, 576, 1536, 30, 9, 3, 0, seq_len);
  if (name == "smollm2-moe") return shape(name, 49152, 576, 1536, 30, 9, 3, 8, seq_len);
  if (name == "llama-1b") return shape(name, 32000, 2048, 5632, 20, 16, 8, 0, seq_len);
  if (name == "moe-1b") return shape(name, 32000, 2048, 2816, 20, 16, 8, 8, seq_len);
  throw UsageError("--shape: unknown shape '" + name + "' (smollm2, smollm2-moe, llama-1b, moe-1b)");
}

// Seconds of fn, waiting for the GPU before and after.
double timed(const std::function<void()>& fn) {
  UPCYCLE_CUDA(cudaDeviceSynchronize());
  const auto t0 = std::chrono::steady_clock::now();
  fn();
  UPCYCLE_CUDA(cudaDeviceSynchronize());
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best of five n×n×n bf16 products through the model's GEMM (cuBLAS, fp32 accumulation).
double gemm_tflops(int64_t n) {
  Rng rng(1);
  std::vector<float> host(size_t(n * n));
  for (float& x : host) x = float(rng.uniform() - 0.5);
  cuda::DeviceBuffer<float> f;
  f.upload(host);
  cuda::DeviceBuffer<cuda::bf16> a(host.size()), c(host.size());
  cuda::cast<cuda::bf16, float>(a.data(), f.data(), n * n);
  double best = 1e30;
  for (int i = 0; i < 6; ++i) {  // the first warms up
    const double s = timed([&] { cuda::matmul_forward<cuda::bf16, cuda::bf16>(c.data(), a.data(), a.data(), nullptr, n, n, n); });
    if (i > 0) best = std::min(best, s);
  }
  return 2.0 * double(n) * double(n) * double(n) / best / 1e12;
}

// Random token sequences and their next-token targets.
struct BenchBatch {
  Batch batch;
  std::vector<int32_t> targets;
};
BenchBatch bench_batch(const ModelConfig& c, const CudaBenchOptions& o) {
  Rng rng(2);
  std::vector<std::vector<int32_t>> seqs(size_t(o.batch));
  BenchBatch b;
  for (auto& s : seqs) {
    for (int64_t t = 0; t < o.seq_len; ++t) s.push_back(int32_t(rng.below(uint64_t(c.vocab_size))));
    for (int64_t t = 0; t < o.seq_len; ++t) b.targets.push_back(t + 1 < o.seq_len ? s[size_t(t + 1)] : -100);
  }
  b.batch = pack(seqs);
  return b;
}

Json bench_shape(const std::string& name, const CudaBenchOptions& o, double ceiling_tflops) {
  const ModelConfig c = shape_config(name, o.seq_len);
  spdlog::info("{}: {} layers, hidden {}, {} experts; {} x {} tokens per step", name, c.num_hidden_layers,
               c.hidden_size, c.num_local_experts, o.batch, o.seq_len);
  Weights<float> host = load_weights<float>(*random_init(c, 1));
  cuda::Transformer<cuda::bf16> model(c, cuda::upload<cuda::bf16>(host, c), "bench");
  cuda::DeviceWeights<float> master = cuda::upload<float>(host, c), grads = cuda::zeros_like(host, c);
  cuda::AdamW<cuda::bf16> optimizer(cuda::trained_tensors<cuda::bf16>(master, model.weights(), grads, c), {});
  host = {};
  const BenchBatch b = bench_batch(c, o);
  const double tokens = double(o.batch * o.seq_len);

  auto forward = [&] { model.loss(b.batch, b.targets); };
  auto train_step = [&] {
    optimizer.zero_grads();
    model.loss_and_grad(b.batch, b.targets, grads);
    optimizer.clip(1.0);
    optimizer.step(1e-5);
  };
  for (int64_t i = 0; i < o.warmup; ++i) forward(), train_step();
  const double forward_s = timed([&] { for (int64_t i = 0; i < o.steps; ++i) forward(); }) / double(o.steps);
  const double step_s = timed([&] { for (int64_t i = 0; i < o.steps; ++i) train_step(); }) / double(o.steps);
  size_t free_bytes = 0, total_bytes = 0;
  UPCYCLE_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));

  Json j;
  j["active_matmul_params"] = active_matmul_params(c);
  j["forward_tokens_per_s"] = tokens / forward_s;
  j["train_tokens_per_s"] = tokens / step_s;
  j["step_s"] = step_s;
  const double tflops = tokens / step_s * train_flops_per_token(c, o.seq_len) / 1e12;
  j["train_tflops"] = tflops;
  j["mfu_vs_gemm_ceiling"] = tflops / ceiling_tflops;
  j["device_memory_used_gb"] = double(total_bytes - free_bytes) / 1e9;
  spdlog::info("{}: training {:.0f} tokens/s, {:.1f} TFLOP/s ({:.1f}% of the GEMM ceiling), forward {:.0f} tokens/s",
               name, tokens / step_s, tflops, 100 * tflops / ceiling_tflops, tokens / forward_s);
  return j;
}

}  // namespace

std::vector<std::string> cuda_bench_shapes() { return {"smollm2", "smollm2-moe", "llama-1b", "moe-1b"}; }

Json bench_cuda(const CudaBenchOptions& o) {
  std::string reason;
  if (!cuda::available(&reason)) throw std::runtime_error("--device cuda: " + reason);
  for (const auto& name : o.shapes) shape_config(name, o.seq_len);  // unknown names fail before any work
  cudaDeviceProp prop{};
  UPCYCLE_CUDA(cudaGetDeviceProperties(&prop, 0));
  Json j;
  j["device"] = prop.name;
  j["gemm_bf16_tflops"] = gemm_tflops(o.gemm_size);
  spdlog::info("{}: bf16 GEMM {}^3 at {:.0f} TFLOP/s", prop.name, o.gemm_size, j["gemm_bf16_tflops"].get<double>());
  j["batch"] = o.batch;
  j["seq_len"] = o.seq_len;
  for (const auto& name : o.shapes.empty() ? cuda_bench_shapes() : o.shapes)
    j[name] = bench_shape(name, o, j["gemm_bf16_tflops"].get<double>());
  return j;
}

}  // namespace upcycle

// The whole model on the GPU against the CPU: logits, the loss and every gradient, then 50
// training steps whose loss curves must follow each other. Head dim 32 (the GPU's attention
// needs 32 or more); random weights stored in bf16 so that the bf16 model reads exactly the
// CPU's weights.
#include <doctest/doctest.h>

#include <cmath>
#include <type_traits>

#include "cuda/model.hpp"
#include "cuda/optimizer.hpp"
#include "cuda_check.hpp"
#include "gpu_model.hpp"
#include "tests/common/fixtures.hpp"
#include "trainer/optimizer.hpp"
#include "trainer/parameters.hpp"

namespace upcycle::test {

namespace {

// f32: every element within tol of the CPU's. bf16: the error's norm within tol of the
// CPU's norm: a token whose top-k choice flips on a near-tie under bf16 rounding moves a few
// elements far, which an element-wise bound would call a failure.
template <class T>
void check_model_values(const std::vector<double>& got, const std::vector<double>& want, double tol,
                        const std::string& what) {
  if constexpr (std::is_same_v<T, float>) {
    check_close(got, want, tol, what);
  } else {
    REQUIRE(got.size() == want.size());
    double err = 0, norm = 0;
    for (size_t i = 0; i < got.size(); ++i) err += (got[i] - want[i]) * (got[i] - want[i]), norm += want[i] * want[i];
    CHECK_MESSAGE(std::sqrt(err) <= tol * std::sqrt(norm), what << ": relative error " << std::sqrt(err / norm));
  }
}

template <class T>
void check_model(const std::string& type, double tol) {
  const ModelConfig config = gpu_config(type);
  const auto ckpt = random_checkpoint(config, 7, DType::BF16);
  Transformer<double> cpu(*ckpt);
  cuda::Transformer<T> gpu(*ckpt);
  const GpuBatch d = gpu_batch(config.vocab_size, 3);

  const auto cpu_logits = cpu.forward(d.batch);
  check_model_values<T>(widen(to_host(gpu.forward(d.batch))), {cpu_logits.begin(), cpu_logits.end()}, tol,
                        type + " logits");

  LossOptions opts;
  opts.z_loss_coef = config.is_moe() ? 1e-3 : 0;
  Weights<double> cpu_grads = zeros_like(cpu.weights(), config);
  Weights<float> host = load_weights<float>(*ckpt);
  cuda::DeviceWeights<float> gpu_grads = cuda::zeros_like(host, config);
  const LossReport want = cpu.loss_and_grad(d.batch, d.targets, cpu_grads, opts);
  const LossReport got = gpu.loss_and_grad(d.batch, d.targets, gpu_grads, opts);
  CHECK(got.tokens == want.tokens);
  CHECK(got.ce() == doctest::Approx(want.ce()).epsilon(tol));
  CHECK(got.aux == doctest::Approx(want.aux).epsilon(tol).scale(0));  // relative: the losses are small
  CHECK(got.z == doctest::Approx(want.z).epsilon(tol).scale(0));
  if (std::is_same_v<T, float>) CHECK(got.expert_tokens == want.expert_tokens);
  Weights<float> grads = cuda::download(gpu_grads, config);
  auto g = parameters(grads, config);
  auto w = parameters(cpu_grads, config);
  for (size_t i = 0; i < g.size(); ++i)
    check_model_values<T>(widen(*g[i].values), *w[i].values, tol, type + " gradient of " + g[i].tensor.name);
}

// 50 AdamW steps over two alternating batches on each device; the losses step by step.
template <class T>
void check_training(const std::string& type, double tol) {
  const ModelConfig config = gpu_config(type);
  const auto ckpt = random_checkpoint(config, 11, DType::BF16);
  const GpuBatch batches[2] = {gpu_batch(config.vocab_size, 5), gpu_batch(config.vocab_size, 6)};
  ops::AdamWConfig hyper;
  hyper.weight_decay = 0.01;

  Transformer<float> cpu(*ckpt);
  Weights<float> cg = zeros_like(cpu.weights(), config);
  AdamW cpu_opt(trained_tensors(cpu.weights(), cg, config), hyper);
  Weights<float> host = load_weights<float>(*ckpt);
  cuda::Transformer<T> gpu(*ckpt);
  cuda::DeviceWeights<float> master = cuda::upload<float>(host, config), gg = cuda::zeros_like(host, config);
  cuda::AdamW<T> gpu_opt(cuda::trained_tensors<T>(master, gpu.weights(), gg, config), hyper);
  for (int step = 0; step < 50; ++step) {
    const GpuBatch& d = batches[step % 2];
    cpu_opt.zero_grads();
    gpu_opt.zero_grads();
    const double want = cpu.loss_and_grad(d.batch, d.targets, cg, {}).ce();
    const double got = gpu.loss_and_grad(d.batch, d.targets, gg, {}).ce();
    CHECK_MESSAGE(std::fabs(got - want) <= tol * std::fabs(want), type << " step " << step << ": GPU loss " << got
                                                                        << ", CPU " << want);
    cpu_opt.clip(1.0);
    gpu_opt.clip(1.0);
    cpu_opt.step(1e-3);
    gpu_opt.step(1e-3);
  }
}

}  // namespace

// The f32 model is a chain of f32 ops, each within 1e-5 of the CPU: a few times that at the end.
TEST_CASE("model: f32 logits, loss and gradients match the CPU (llama, mistral, mixtral, qwen2_moe)") {
  for (const char* type : {"llama", "mistral", "mixtral", "qwen2_moe"}) check_model<float>(type, 1e-4);
}

// bf16 rounds every activation: the logits and gradients hold to a few per cent of their scale.
TEST_CASE("model: bf16 logits, loss and gradients follow the CPU (llama, mixtral, qwen2_moe)") {
  for (const char* type : {"llama", "mixtral", "qwen2_moe"}) check_model<cuda::bf16>(type, 5e-2);
}

TEST_CASE("model: 50 training steps follow the CPU's loss curve (f32 and bf16, dense and MoE)") {
  for (const char* type : {"llama", "mixtral"}) {
    check_training<float>(type, 1e-3);
    check_training<cuda::bf16>(type, 5e-2);
  }
}

}  // namespace upcycle::test

// The GPU's Engine against the CPU's: forward, router inputs, and training with frozen parts
// step by step; the optimizer state saved by one device resumes on either.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <stdexcept>

#include "cuda/engine.hpp"
#include "cuda_check.hpp"
#include "gpu_model.hpp"
#include "tests/common/fixtures.hpp"
#include "trainer/parameters.hpp"

namespace upcycle::test {

namespace {

// An engine of `make` over the checkpoint's weights (bf16-stored, so that both devices read the same values).
std::unique_ptr<Engine> engine_of(const Checkpoint& ckpt, EngineFactory make, bool train) {
  TrainSetup setup;
  setup.adam.weight_decay = 0.01;
  setup.frozen.set(size_t(Part::Embeddings));
  return load_engine(ckpt, make, train ? std::optional(setup) : std::nullopt);
}

// `steps` AdamW steps over two alternating batches; the losses.
std::vector<double> train(Engine& e, int steps) {
  const GpuBatch batches[2] = {gpu_batch(e.config().vocab_size, 5), gpu_batch(e.config().vocab_size, 6)};
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    const GpuBatch& b = batches[(e.steps() + s) % 2];
    e.zero_grads();
    losses.push_back(e.accumulate(b.batch, b.targets, {}).ce());
    e.clip(1.0);
    e.step(1e-3);
  }
  return losses;
}

// Every weight, as each engine writes it (the CPU's keeps the frozen embeddings as stored).
void check_weights(Engine& got, Engine& want, double tol, const std::string& what) {
  const auto g = got.checkpoint(nullptr), w = want.checkpoint(nullptr);
  REQUIRE(g->tensors().size() == w->tensors().size());
  for (const TensorInfo& t : g->tensors())
    check_close(g->load(t.name).to_f32_vector(), w->load(t.name).to_f32_vector(), tol, what + ": " + t.name);
}

}  // namespace

TEST_CASE("engine: the GPU's forward and router inputs match the CPU's (f32)") {
  for (const char* type : {"llama", "mixtral"}) {
    const auto ckpt = random_checkpoint(gpu_config(type), 3, DType::BF16);
    const auto gpu = engine_of(*ckpt, cuda::make_engine<float>, false);
    const auto cpu = engine_of(*ckpt, make_cpu_engine, false);
    const GpuBatch b = gpu_batch(gpu->config().vocab_size, 4);
    check_close(gpu->forward(b.batch), cpu->forward(b.batch), 1e-4, std::string(type) + " logits");
    const auto got = gpu->ffn_inputs(b.batch), want = cpu->ffn_inputs(b.batch);
    REQUIRE(got.size() == want.size());
    for (size_t l = 0; l < got.size(); ++l) check_close(got[l], want[l], 1e-4, std::string(type) + " router input");
    CHECK(gpu->loss(b.batch, b.targets).ce() == doctest::Approx(cpu->loss(b.batch, b.targets).ce()).epsilon(1e-4));
    CHECK_THROWS_AS(gpu->zero_grads(), std::logic_error);  // made without a training setup
    CHECK(gpu->device() != "cpu");
  }
}

TEST_CASE("engine: the GPU's decoder gives the CPU's logits, appended in pieces and after a truncation (f32)") {
  for (const char* type : {"llama", "mistral", "mixtral"}) {
    const auto ckpt = random_checkpoint(gpu_config(type), 5, DType::BF16);
    const auto gpu = engine_of(*ckpt, cuda::make_engine<float>, false);
    const auto cpu = engine_of(*ckpt, make_cpu_engine, false);
    const auto got = gpu->decoder(48), want = cpu->decoder(48);
    const std::vector<int32_t> ids = uniform_ints(40, 9, 0, int32_t(gpu->config().vocab_size));
    size_t at = 0;
    for (size_t piece : {1, 7, 1, 16, 15}) {  // past mistral's window of 16
      const std::span<const int32_t> part(ids.data() + at, piece);
      check_close(got->append(part), want->append(part), 1e-4, std::string(type) + " logits at " + std::to_string(at));
      at += piece;
    }
    got->truncate(10);
    want->truncate(10);
    check_close(got->append({ids.data(), 3}), want->append({ids.data(), 3}), 1e-4, std::string(type) + " after truncate");
    CHECK(got->length() == 13);
    const int32_t outside[] = {int32_t(gpu->config().vocab_size)};
    CHECK_THROWS_AS(got->append(outside), std::invalid_argument);
    CHECK(got->length() == 13);
  }
}

TEST_CASE("engine: GPU training follows the CPU's with frozen embeddings, and its moments resume on either device") {
  for (const char* type : {"llama", "mixtral"}) {
    const auto ckpt = random_checkpoint(gpu_config(type), 11, DType::BF16);
    const auto gpu = engine_of(*ckpt, cuda::make_engine<float>, true);
    const auto cpu = engine_of(*ckpt, make_cpu_engine, true);
    const std::vector<double> got = train(*gpu, 20), want = train(*cpu, 20);
    check_close(got, want, 1e-3, std::string(type) + " losses");
    check_weights(*gpu, *cpu, 1e-3, type);
    CHECK(gpu->host_weights().embedding == load_weights<float>(*ckpt).embedding);  // frozen

    // The GPU's state, saved, continues on a fresh GPU engine and on the CPU as the run itself does.
    ScratchDir dir;
    const auto state = dir / "optimizer.safetensors";
    gpu->save_optimizer(state);
    const auto weights = as_checkpoint(gpu->host_weights(), gpu->config());
    const auto resumed_gpu = engine_of(*weights, cuda::make_engine<float>, true);
    const auto resumed_cpu = engine_of(*weights, make_cpu_engine, true);
    resumed_gpu->load_optimizer(state);
    resumed_cpu->load_optimizer(state);
    CHECK(resumed_gpu->steps() == 20);
    CHECK(resumed_cpu->steps() == 20);
    const std::vector<double> straight = train(*gpu, 5);
    check_close(train(*resumed_gpu, 5), straight, 1e-6, std::string(type) + " resumed on the GPU");
    check_close(train(*resumed_cpu, 5), straight, 1e-3, std::string(type) + " resumed on the CPU");
  }
}

TEST_CASE("engine: bf16 training on the GPU follows the CPU's loss curve") {
  const auto ckpt = random_checkpoint(gpu_config("mixtral"), 12, DType::BF16);
  const auto gpu = engine_of(*ckpt, cuda::make_engine<cuda::bf16>, true);
  const auto cpu = engine_of(*ckpt, make_cpu_engine, true);
  const std::vector<double> got = train(*gpu, 30), want = train(*cpu, 30);
  for (size_t s = 0; s < got.size(); ++s)
    CHECK_MESSAGE(std::fabs(got[s] - want[s]) <= 5e-2 * std::fabs(want[s]), "step " << s << ": GPU " << got[s] << ", CPU " << want[s]);
}

}  // namespace upcycle::test

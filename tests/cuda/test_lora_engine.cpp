// The GPU's LoRA engines (cuda::make_lora_engine) against the CPU's (make_cpu_lora_engine,
// make_cpu_inference_engine), for a dense LoRA and a LoRA-MoE (MixLoRA) over a small base: a fresh
// adapter (B = 0) computes the base's loss; AdamW steps follow the CPU's (losses, A and B, the
// routers); the same dropout seed drops the same elements; the trained adapter written as a folder
// computes on the CPU what the GPU computes, and serves forward and decoding on the GPU; the
// optimizer state saved on one device resumes on either.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>

#include "core/error.hpp"
#include "cuda/engine.hpp"
#include "cuda_check.hpp"
#include "gpu_model.hpp"
#include "tests/common/fixtures.hpp"
#include "trainer/lora_init.hpp"

namespace upcycle::test {

namespace {

// AdamW as the runs here take it. eps near the gradients' scale (their RMS is about 1e-2 here, on
// the CPU): an element whose gradient is near zero, its sign left to rounding, moves by about
// g/eps on both devices, not by +lr on one and −lr on the other.
ops::AdamWConfig adam() {
  ops::AdamWConfig a;
  a.eps = 1e-2;
  a.weight_decay = 0.01;
  return a;
}

// A llama base (head dim 32, as the GPU's attention takes), stored in bf16 so that both devices
// read the same values.
std::unique_ptr<Checkpoint> base_model(uint64_t seed) {
  return random_checkpoint(gpu_config("llama"), seed, DType::BF16);
}

// A fresh adapter (PEFT's A, B = 0) of rank 4, alpha 8, on every module of `base`; with
// `experts`, a LoRA-MoE of that many experts (top-2, random routers).
LoraAdapter fresh_adapter(const ModelConfig& base, int64_t experts, double dropout = 0) {
  LoraConfig c;
  c.rank = 4;
  c.alpha = 8;
  c.experts = experts;
  c.dropout = dropout;
  return init_lora_adapter(base, complete_lora_config(c, base), 3);
}

// `a` with every B drawn uniform in ±0.5: terms that move the outputs from the first step.
LoraAdapter with_random_b(LoraAdapter a) {
  uint64_t seed = 700;
  for (LoraModule& m : a.modules) {
    std::vector<float> b = random_values(size_t(m.b.numel()), ++seed);
    for (float& x : b) x *= 0.5f;
    m.b = Tensor::from_f32(m.b.shape(), std::move(b));
  }
  return a;
}

// The adapter with its tensors copied (the CPU's trained_adapter() views the engine's values).
LoraAdapter copied(const LoraAdapter& a) {
  LoraAdapter out{a.config, {}, {}};
  for (const LoraModule& m : a.modules)
    out.modules.push_back({m.layer, m.module, Tensor::from_f32(m.a.shape(), m.a.to_f32_vector()),
                           Tensor::from_f32(m.b.shape(), m.b.to_f32_vector()), m.expert});
  for (const Tensor& r : a.routers) out.routers.push_back(Tensor::from_f32(r.shape(), r.to_f32_vector()));
  return out;
}

std::string kind(int64_t experts) { return experts ? "LoRA-MoE" : "LoRA"; }

// `steps` AdamW steps at lr 1e-2 over two alternating batches, chosen by the engine's step count
// (so that a resumed engine continues with the batch a straight one takes); with `dropout_seed`,
// step t's micro-batch has seed dropout_seed + t. The losses.
std::vector<double> train(Engine& e, int steps, uint64_t dropout_seed = 0) {
  const GpuBatch batches[2] = {gpu_batch(e.config().vocab_size, 5), gpu_batch(e.config().vocab_size, 6)};
  std::vector<double> losses;
  for (int s = 0; s < steps; ++s) {
    const GpuBatch& b = batches[e.steps() % 2];
    LossOptions opts;
    opts.dropout_seed = dropout_seed ? dropout_seed + uint64_t(e.steps()) : 0;
    e.zero_grads();
    losses.push_back(e.accumulate(b.batch, b.targets, opts).ce());
    e.clip(1.0);
    e.step(1e-2);
  }
  return losses;
}

// Every A, B and router of `got` within tol of `want`'s (check_close: relative to each tensor's
// scale), module by module in the same places.
void check_adapters(const LoraAdapter& got, const LoraAdapter& want, double tol, const std::string& what) {
  REQUIRE(got.modules.size() == want.modules.size());
  REQUIRE(got.routers.size() == want.routers.size());
  for (size_t i = 0; i < got.modules.size(); ++i) {
    const LoraModule &g = got.modules[i], &w = want.modules[i];
    const std::string where = what + " " + std::to_string(w.layer) + "." + w.module + "." + std::to_string(w.expert);
    const bool same_place = g.layer == w.layer && g.module == w.module && g.expert == w.expert;
    REQUIRE_MESSAGE(same_place, where);
    REQUIRE(g.a.shape() == w.a.shape());
    REQUIRE(g.b.shape() == w.b.shape());
    check_close(g.a.to_f32_vector(), w.a.to_f32_vector(), tol, where + " A");
    check_close(g.b.to_f32_vector(), w.b.to_f32_vector(), tol, where + " B");
  }
  for (size_t l = 0; l < got.routers.size(); ++l)
    check_close(got.routers[l].to_f32_vector(), want.routers[l].to_f32_vector(), tol,
                what + " router " + std::to_string(l));
}

// max_i |a_i − b_i| / max_i |b_i|: how far two adapters' values or two outputs lie apart.
double relative_gap(const std::vector<float>& a, const std::vector<float>& b) {
  double gap = 0, scale = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    gap = std::max(gap, double(std::fabs(a[i] - b[i])));
    scale = std::max(scale, double(std::fabs(b[i])));
  }
  return gap / scale;
}

}  // namespace

TEST_CASE("lora engine: a fresh adapter computes the base's loss on the GPU, and its steps follow the CPU's (f32)") {
  for (const int64_t experts : {0, 4}) {
    CAPTURE(experts);
    const auto ckpt = base_model(21);
    const LoraAdapter start = fresh_adapter(ckpt->config(), experts);
    const auto gpu = cuda::make_lora_engine<float>(*ckpt, start, adam());
    const auto cpu = make_cpu_lora_engine(*ckpt, start, adam());
    const auto base = load_engine(*ckpt, cuda::make_engine<float>);
    CHECK(gpu->config().is_moe() == (experts > 0));
    CHECK(gpu->device() != "cpu");
    // B = 0: the base's computation (a LoRA-MoE's routed sum of equal FFN outputs rounds apart).
    const GpuBatch b = gpu_batch(gpu->config().vocab_size, 5);
    CHECK(gpu->loss(b.batch, b.targets).ce() == doctest::Approx(base->loss(b.batch, b.targets).ce()).epsilon(1e-6));
    check_close(gpu->forward(b.batch), base->forward(b.batch), 1e-5, kind(experts) + " logits with B = 0");

    const std::vector<double> got = train(*gpu, 6), want = train(*cpu, 6);
    check_close(got, want, 1e-4, kind(experts) + " losses");
    CHECK(got.back() < got.front());
    const LoraAdapter trained = *gpu->trained_adapter();
    check_adapters(trained, copied(*cpu->trained_adapter()), 1e-3, kind(experts));
    // The comparison has something to see: every A moved by more than its weight decay alone
    // moves it (6e-4), every B off zero, and the routers.
    for (size_t i = 0; i < trained.modules.size(); ++i) {
      CHECK(relative_gap(trained.modules[i].a.to_f32_vector(), start.modules[i].a.to_f32_vector()) > 1e-3);
      CHECK(relative_gap(start.modules[i].b.to_f32_vector(), trained.modules[i].b.to_f32_vector()) == 1);
    }
    for (size_t l = 0; l < trained.routers.size(); ++l)
      CHECK(relative_gap(trained.routers[l].to_f32_vector(), start.routers[l].to_f32_vector()) > 1e-3);
    // Nothing of the base trains: host_weights() holds a LoRA-MoE's routers alone.
    const Weights<float>& host = gpu->host_weights();
    CHECK(host.embedding.empty());
    CHECK(host.layers.at(0).q.empty());
    CHECK(host.layers.at(0).router.empty() == (experts == 0));
    if (experts) check_close(host.layers[1].router, trained.routers[1].to_f32_vector(), 0, "host_weights' router");
  }
}

TEST_CASE("lora engine: in bf16 the GPU's steps follow the CPU's f32 ones") {
  for (const int64_t experts : {0, 4}) {
    CAPTURE(experts);
    const auto ckpt = base_model(23);
    const LoraAdapter start = fresh_adapter(ckpt->config(), experts);
    const auto gpu = cuda::make_lora_engine<cuda::bf16>(*ckpt, start, adam());
    const auto cpu = make_cpu_lora_engine(*ckpt, start, adam());
    const std::vector<double> got = train(*gpu, 6), want = train(*cpu, 6);
    // bf16 activations: the losses within 2% (a LoRA-MoE's top-k may choose otherwise on a near
    // tie, 5%); a dense adapter's A and B within 10% of their scale (B is a few steps of lr from
    // zero, each step's gradient a few per cent off).
    for (size_t s = 0; s < got.size(); ++s)
      CHECK_MESSAGE(std::fabs(got[s] - want[s]) <= (experts ? 5e-2 : 2e-2) * want[s],
                    kind(experts) << " step " << s << ": GPU " << got[s] << ", CPU " << want[s]);
    CHECK(got.back() < got.front());
    if (!experts) check_adapters(*gpu->trained_adapter(), copied(*cpu->trained_adapter()), 1e-1, "bf16 LoRA");
  }
}

TEST_CASE("lora engine: with LoRA dropout the GPU drops what the CPU drops for the same seed, in training only") {
  for (const int64_t experts : {0, 4}) {
    CAPTURE(experts);
    const auto ckpt = base_model(25);
    const LoraAdapter start = with_random_b(fresh_adapter(ckpt->config(), experts, 0.25));
    const auto gpu = cuda::make_lora_engine<float>(*ckpt, start, adam());
    const auto cpu = make_cpu_lora_engine(*ckpt, start, adam());
    const GpuBatch b = gpu_batch(gpu->config().vocab_size, 7);
    auto dropped = [&](Engine& e, uint64_t seed) {
      LossOptions opts;
      opts.dropout_seed = seed;
      e.zero_grads();
      return e.accumulate(b.batch, b.targets, opts).ce();
    };
    const double got = dropped(*gpu, 11), want = dropped(*cpu, 11);
    CHECK(got == doctest::Approx(want).epsilon(1e-5));
    // Evaluation never drops (the seeds are back to none), and the masks do act: another seed,
    // or none, gives another loss.
    const double kept = gpu->loss(b.batch, b.targets).ce();
    CHECK(kept == doctest::Approx(cpu->loss(b.batch, b.targets).ce()).epsilon(1e-5));
    CHECK(std::fabs(got - kept) > 1e-3 * kept);
    CHECK(std::fabs(dropped(*gpu, 12) - got) > 1e-3 * got);
    // The masks' gradients too: steps with dropout follow the CPU's.
    check_close(train(*gpu, 3, 40), train(*cpu, 3, 40), 1e-4, kind(experts) + " losses with dropout");
    check_adapters(*gpu->trained_adapter(), copied(*cpu->trained_adapter()), 1e-3, kind(experts) + " with dropout");
  }
}

TEST_CASE("lora engine: the GPU's trained adapter, as a folder, computes on the CPU what the GPU computes, and serves on the GPU") {
  for (const int64_t experts : {0, 4}) {
    CAPTURE(experts);
    ScratchDir dir;
    const auto ckpt = base_model(27);
    const auto trained = cuda::make_lora_engine<float>(*ckpt, fresh_adapter(ckpt->config(), experts), adam());
    train(*trained, 3);
    write_peft_adapter(*trained->trained_adapter(), dir / "adapter", false);
    const auto cpu = make_cpu_inference_engine(*ckpt, Precision::F32, dir / "adapter");
    const auto served =
        cuda::make_lora_engine<float>(*ckpt, read_peft_adapter(dir / "adapter", ckpt->config()), std::nullopt);
    const GpuBatch b = gpu_batch(ckpt->config().vocab_size, 8);
    const std::vector<float> logits = served->forward(b.batch);
    check_close(logits, trained->forward(b.batch), 1e-6, kind(experts) + " served on the GPU");
    check_close(logits, cpu->forward(b.batch), 1e-4, kind(experts) + " on the CPU");
    const auto base = load_engine(*ckpt, cuda::make_engine<float>);
    CHECK(relative_gap(logits, base->forward(b.batch)) > 1e-3);  // the adapter acts
    CHECK(served->loss(b.batch, b.targets).ce() == doctest::Approx(cpu->loss(b.batch, b.targets).ce()).epsilon(1e-4));
    // Decoding, a few tokens at a time.
    const auto got = served->decoder(64), want = cpu->decoder(64);
    const std::vector<int32_t> ids = uniform_ints(30, 9, 0, int32_t(ckpt->config().vocab_size));
    size_t at = 0;
    for (size_t piece : {1, 9, 1, 19}) {
      const std::span<const int32_t> part(ids.data() + at, piece);
      check_close(got->append(part), want->append(part), 1e-4, kind(experts) + " decoding at " + std::to_string(at));
      at += piece;
    }
    // The base with the adapter merged, as a checkpoint: its logits on the CPU.
    const auto merged = trained->checkpoint(nullptr);
    CHECK(merged->config().is_moe() == (experts > 0));
    check_close(make_cpu_inference_engine(*merged)->forward(b.batch), logits, 1e-4, kind(experts) + " merged");
    // An engine for inference trains nothing.
    CHECK_FALSE(served->trained_adapter());
    CHECK_THROWS_AS(served->zero_grads(), std::logic_error);
  }
}

TEST_CASE("lora engine: the optimizer state saved on the GPU resumes on the GPU and on the CPU, the CPU's on the GPU") {
  ScratchDir dir;
  const auto ckpt = base_model(29);
  std::filesystem::path dense_state;
  for (const int64_t experts : {0, 4}) {
    CAPTURE(experts);
    const auto gpu = cuda::make_lora_engine<float>(*ckpt, fresh_adapter(ckpt->config(), experts, 0.1), adam());
    train(*gpu, 4, 50);
    const auto state = dir / (kind(experts) + "-gpu.safetensors");
    gpu->save_optimizer(state);
    const LoraAdapter at = *gpu->trained_adapter();
    const auto on_gpu = cuda::make_lora_engine<float>(*ckpt, at, adam());
    const auto on_cpu = make_cpu_lora_engine(*ckpt, at, adam());
    on_gpu->load_optimizer(state);
    on_cpu->load_optimizer(state);
    CHECK(on_gpu->steps() == 4);
    CHECK(on_cpu->steps() == 4);
    const std::vector<double> straight = train(*gpu, 3, 50);
    check_close(train(*on_gpu, 3, 50), straight, 1e-6, kind(experts) + " resumed on the GPU");
    check_close(train(*on_cpu, 3, 50), straight, 1e-4, kind(experts) + " resumed on the CPU");

    // The CPU's state resumes on the GPU.
    const auto cpu_state = dir / (kind(experts) + "-cpu.safetensors");
    on_cpu->save_optimizer(cpu_state);
    const auto back = cuda::make_lora_engine<float>(*ckpt, copied(*on_cpu->trained_adapter()), adam());
    back->load_optimizer(cpu_state);
    CHECK(back->steps() == 7);
    check_close(train(*back, 2, 50), train(*on_cpu, 2, 50), 1e-4, kind(experts) + " the CPU's state on the GPU");
    // Another run's state (a dense LoRA's tensor names in a LoRA-MoE) is refused, naming the file.
    if (experts) CHECK_THROWS_AS(back->load_optimizer(dense_state), InputError);
    dense_state = state;
  }
}

}  // namespace upcycle::test

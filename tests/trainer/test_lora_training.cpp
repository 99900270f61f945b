// Training a LoRA adapter on a frozen base: a fresh adapter (PEFT's draw of A, B = 0) computes
// the base model's bits; the dropout op's gradients against finite differences and its masks;
// the engine's steps move A and B alone, its adapter written as a PEFT folder computes what the
// engine computes, and its dropout acts in training only, the same for the same seed.
#include <doctest/doctest.h>

#include <omp.h>

#include <cmath>
#include <cstring>

#include "core/option_table.hpp"
#include "tests/common/fixtures.hpp"
#include "tests/trainer/gradcheck.hpp"
#include "trainer/batch.hpp"
#include "trainer/engine.hpp"
#include "trainer/lora_init.hpp"
#include "trainer/ops/lora.hpp"

using namespace upcycle;

namespace {

const std::vector<int32_t> kIds = {1, 7, 5, 3, 6, 2, 4, 7, 0, 5};

std::vector<int32_t> next_tokens(const std::vector<int32_t>& ids) {
  std::vector<int32_t> t(ids.begin() + 1, ids.end());
  t.push_back(ops::kIgnoreIndex);
  return t;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

LoraConfig asked(int64_t rank, double dropout = 0) {
  LoraConfig c;
  c.rank = rank;
  c.dropout = dropout;
  return c;
}

// The engine's adapter copied (trained_adapter() views the engine's values).
LoraAdapter kept(Engine& engine) {
  LoraAdapter a = *engine.trained_adapter();
  for (LoraModule& m : a.modules) {
    m.a = Tensor::from_f32(m.a.shape(), m.a.to_f32_vector());
    m.b = Tensor::from_f32(m.b.shape(), m.b.to_f32_vector());
  }
  return a;
}

// One step's losses and the adapter after `steps` AdamW steps on kIds.
struct Trained {
  std::vector<double> losses;
  LoraAdapter adapter;
};
Trained train_steps(Engine& engine, int steps, uint64_t dropout_seed = 0) {
  Trained out;
  const Batch batch = pack({kIds});
  LossOptions opts;
  for (int s = 0; s < steps; ++s) {
    engine.zero_grads();
    opts.dropout_seed = dropout_seed ? dropout_seed + uint64_t(s) : 0;
    out.losses.push_back(engine.accumulate(batch, next_tokens(kIds), opts).ce());
    engine.clip(1.0);
    engine.step(1e-2);
  }
  out.adapter = kept(engine);
  return out;
}

}  // namespace

TEST_CASE("lora init: settings completed for the base, A drawn as PEFT draws it, B zero, one stream per seed") {
  const ModelConfig dense = test::tiny_config("qwen2"), moe = test::tiny_config("mixtral");
  const LoraConfig c = complete_lora_config(asked(2), dense);
  CHECK(c.alpha == 2.0);  // a scaling of 1
  CHECK(c.target_modules == lora_module_names());
  // An MoE's FFN is its experts: by default its attention alone; naming gate_proj is refused.
  CHECK(complete_lora_config(asked(2), moe).target_modules ==
        std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"});
  LoraConfig ffn = asked(2);
  ffn.target_modules = {"gate_proj"};
  CHECK_THROWS_AS(complete_lora_config(ffn, moe), OptionError);
  CHECK_THROWS_AS(complete_lora_config(asked(dense.hidden_size + 1), dense), OptionError);
  CHECK(parse_lora_targets("v_proj,q_proj", "lora_targets") == std::vector<std::string>{"q_proj", "v_proj"});
  for (const char* bad : {"q_proj,q_proj", "qproj", "", "q_proj,,v_proj"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse_lora_targets(bad, "lora_targets"), OptionError);
  }

  const LoraAdapter a = init_lora_adapter(dense, c, 5);
  REQUIRE(a.modules.size() == size_t(dense.num_hidden_layers) * 7);
  for (const LoraModule& m : a.modules) {
    CAPTURE(m.module);
    const double bound = 1 / std::sqrt(double(m.a.dim(1)));
    const auto values = m.a.to_f32_vector();
    double lo = 1, hi = -1;
    for (float x : values) lo = std::min(lo, double(x)), hi = std::max(hi, double(x));
    CHECK(lo >= -bound);
    CHECK(hi <= bound);
    CHECK(hi - lo > bound);  // spread over the range, not a constant
    for (float x : m.b.to_f32_vector()) REQUIRE(x == 0.0f);
  }
  CHECK(same_bits(a.modules[3].a.to_f32_vector(), init_lora_adapter(dense, c, 5).modules[3].a.to_f32_vector()));
  CHECK(!same_bits(a.modules[3].a.to_f32_vector(), init_lora_adapter(dense, c, 6).modules[3].a.to_f32_vector()));
}

TEST_CASE("lora dropout: the op's gradients against finite differences, and masks fixed by the seed alone") {
  const int64_t N = 5, I = 12, O = 9, r = 3;
  const float scale = 1.5f;
  const ops::LoraDropout drop{0.3f, 77};
  test::Vec x = test::random_vec(size_t(N * I), 1), A = test::random_vec(size_t(r * I), 2),
            B = test::random_vec(size_t(O * r), 3);
  const test::Vec R = test::random_vec(size_t(N * O), 4);
  // loss = Σ out ⊙ R: linear in each of x, A and B, so central differences are exact to rounding.
  auto loss = [&]() {
    std::vector<float> out(size_t(N * O), 0.0f);
    const auto xf = test::as<float>(x), af = test::as<float>(A), bf = test::as<float>(B);
    ops::lora_forward(out.data(), xf.data(), af.data(), bf.data(), scale, N, I, O, r, drop);
    double sum = 0;
    for (size_t i = 0; i < out.size(); ++i) sum += double(out[i]) * R[i];
    return sum;
  };
  std::vector<float> d_x(size_t(N * I), 0.0f), d_A(size_t(r * I), 0.0f), d_B(size_t(O * r), 0.0f);
  const auto xf = test::as<float>(x), af = test::as<float>(A), bf = test::as<float>(B), rf = test::as<float>(R);
  ops::lora_backward(d_x.data(), d_A.data(), d_B.data(), rf.data(), xf.data(), af.data(), bf.data(), scale, N, I, O, r,
                     drop);
  // h = 0.5: exact steps for a linear loss, large against the f32 forward's rounding.
  test::check_gradient("d_in", test::widen(d_x), test::numeric_gradient(x, loss, 0.5), 1e-4);
  test::check_gradient("d_A", test::widen(d_A), test::numeric_gradient(A, loss, 0.5), 1e-4);
  test::check_gradient("d_B", test::widen(d_B), test::numeric_gradient(B, loss, 0.5), 1e-4);

  // The mask: about p dropped, the rest scaled by 1/(1 − p), the same for any thread count.
  const int64_t n = 100000;
  const std::vector<float> ones(static_cast<size_t>(n), 1.0f);
  std::vector<float> one_thread = ones, two_threads = ones, other = ones;
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  ops::lora_dropout(one_thread.data(), ones.data(), n, drop);
  omp_set_num_threads(2);
  ops::lora_dropout(two_threads.data(), ones.data(), n, drop);
  omp_set_num_threads(threads);
  CHECK(same_bits(one_thread, two_threads));
  int64_t dropped = 0;
  for (float v : one_thread) {
    if (v == 0.0f) ++dropped;
    else REQUIRE(v == doctest::Approx(1 / 0.7f));
  }
  CHECK(std::fabs(double(dropped) / double(n) - 0.3) < 0.01);
  ops::lora_dropout(other.data(), ones.data(), n, {0.3f, 78});
  CHECK(!same_bits(one_thread, other));
  CHECK(!ops::LoraDropout{0.3f, 0}.active());  // seed 0: no dropout (the engine's evaluation)
}

TEST_CASE("lora engine: B = 0 gives the base's bits, steps move A and B alone, the written adapter computes the same") {
  test::ScratchDir dir;
  const auto ckpt = test::random_checkpoint(test::tiny_config("qwen2"), 8);
  const ModelConfig& c = ckpt->config();
  LoraConfig settings = asked(2);
  settings.target_modules = {"q_proj", "v_proj", "up_proj", "down_proj"};
  settings.alpha = 4;
  const LoraAdapter start = init_lora_adapter(c, complete_lora_config(settings, c), 3);
  const auto engine = make_cpu_lora_engine(*ckpt, start, {});
  const auto base = make_cpu_inference_engine(*ckpt);
  const Batch batch = pack({kIds});
  CHECK(same_bits(engine->forward(batch), base->forward(batch)));
  CHECK(engine->host_weights().embedding.empty());  // nothing of the base trains

  const Trained t = train_steps(*engine, 4);
  CHECK(t.losses.back() < t.losses.front());
  CHECK(t.losses.front() == doctest::Approx(base->loss(batch, next_tokens(kIds)).ce()).epsilon(1e-12));
  REQUIRE(t.adapter.modules.size() == start.modules.size());
  for (size_t i = 0; i < start.modules.size(); ++i) {
    CHECK(!same_bits(t.adapter.modules[i].a.to_f32_vector(), start.modules[i].a.to_f32_vector()));
    CHECK(!same_bits(t.adapter.modules[i].b.to_f32_vector(), start.modules[i].b.to_f32_vector()));
  }
  // The adapter as PEFT's folder, read back on the inference engine, computes the engine's bits.
  write_peft_adapter(t.adapter, dir / "adapter", false);
  const auto applied = make_cpu_inference_engine(*ckpt, Precision::F32, dir / "adapter");
  CHECK(same_bits(applied->forward(batch), engine->forward(batch)));
  CHECK(!same_bits(applied->forward(batch), base->forward(batch)));

  // Continuing from that folder is continuing training: a new engine starts where this one is.
  const auto again = make_cpu_lora_engine(*ckpt, read_peft_adapter(dir / "adapter", c), {});
  CHECK(same_bits(again->forward(batch), engine->forward(batch)));
}

TEST_CASE("lora engine: dropout acts in training only, the same masks for the same seed") {
  const auto ckpt = test::random_checkpoint(test::tiny_config("llama"), 9);
  const ModelConfig& c = ckpt->config();
  const LoraAdapter start = init_lora_adapter(c, complete_lora_config(asked(2, 0.25), c), 4);
  LoraAdapter plain = start;
  plain.config.dropout = 0;
  auto with = make_cpu_lora_engine(*ckpt, start, {}), without = make_cpu_lora_engine(*ckpt, plain, {});
  train_steps(*without, 1);  // B moves off zero, so that dropout changes the output
  const LoraAdapter moved = kept(*without);
  LoraAdapter moved_dropping = moved;
  moved_dropping.config.dropout = 0.25;
  with = make_cpu_lora_engine(*ckpt, moved_dropping, {});
  without = make_cpu_lora_engine(*ckpt, moved, {});
  const Batch batch = pack({kIds});
  // Evaluation never drops.
  CHECK(same_bits(with->forward(batch), without->forward(batch)));
  // Training does, from the micro-batch's seed: 0 is none, equal seeds give equal runs.
  CHECK(train_steps(*make_cpu_lora_engine(*ckpt, moved_dropping, {}), 2, 0).losses == train_steps(*without, 2).losses);
  const Trained a = train_steps(*with, 2, 11), b = train_steps(*make_cpu_lora_engine(*ckpt, moved_dropping, {}), 2, 11);
  const Trained other = train_steps(*make_cpu_lora_engine(*ckpt, moved_dropping, {}), 2, 12);
  CHECK(a.losses == b.losses);
  CHECK(same_bits(a.adapter.modules[0].b.to_f32_vector(), b.adapter.modules[0].b.to_f32_vector()));
  CHECK(a.losses[0] != other.losses[0]);
  CHECK(same_bits(with->forward(batch), make_cpu_inference_engine(*ckpt)->forward(batch)) == false);
}

TEST_CASE("lora engine: in bf16 the losses follow f32's within 1%, the same bits on every run") {
  const auto ckpt = test::random_checkpoint(test::tiny_config("qwen2"), 10);
  const ModelConfig& c = ckpt->config();
  const LoraAdapter start = init_lora_adapter(c, complete_lora_config(asked(2), c), 6);
  const Trained f32 = train_steps(*make_cpu_lora_engine(*ckpt, start, {}), 3);
  const Trained bf16 = train_steps(*make_cpu_lora_engine(*ckpt, start, {}, Precision::BF16), 3);
  const Trained again = train_steps(*make_cpu_lora_engine(*ckpt, start, {}, Precision::BF16), 3);
  for (size_t s = 0; s < f32.losses.size(); ++s) {
    CAPTURE(s);
    CHECK(bf16.losses[s] == doctest::Approx(f32.losses[s]).epsilon(0.01));
    CHECK(bf16.losses[s] != f32.losses[s]);  // the products did run in bf16
  }
  CHECK(bf16.losses == again.losses);
  CHECK(same_bits(bf16.adapter.modules[5].a.to_f32_vector(), again.adapter.modules[5].a.to_f32_vector()));
}

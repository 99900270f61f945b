// LoRA applied unmerged: the op against the product of the merged weight W + scale·B·A (its
// gradients of A and B by the chain rule from the weight's, in the op and through the model), a
// PEFT adapter folder on the CPU's inference engine against the f32 model whose weights were
// merged by hand (logits and decoding), with B = 0 giving the base model's bits; and
// merge_adapter's checkpoint (export --merge-adapter) against the unmerged adapter.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "formats/peft_adapter.hpp"
#include "tests/common/fixtures.hpp"
#include "tests/trainer/lora_reference.hpp"
#include "trainer/engine.hpp"
#include "trainer/model.hpp"
#include "trainer/ops/lora.hpp"
#include "trainer/ops/matmul.hpp"
#include "trainer/parameters.hpp"
#include "trainer/stored_model.hpp"
#include "trainer/stored_weights.hpp"

using namespace upcycle;
using test::chain_rule;
using test::max_relative_error;
using test::merged;

namespace {

const std::vector<int32_t> kIds = {1, 7, 5, 3, 6, 2, 4, 7, 0, 5};

// An adapter of rank 2 on q, v, gate and down of every layer of `config`, random A and B (zero B
// with `zero_b`).
LoraAdapter random_adapter(const ModelConfig& config, bool zero_b) {
  LoraAdapter a;
  a.config.rank = 2;
  a.config.alpha = 3;
  a.config.target_modules = {"q_proj", "v_proj", "gate_proj", "down_proj"};
  uint64_t seed = 40;
  for (int64_t l = 0; l < config.num_hidden_layers; ++l)
    for (const auto& t : expected_tensors(config, Scheme::HF)) {
      if (t.id.layer != l) continue;
      for (const std::string& m : a.config.target_modules) {
        if (lora_module_role(m) != t.id.role) continue;
        const int64_t O = t.shape[0], I = t.shape[1];
        std::vector<float> b = test::random_values(size_t(O * 2), seed++);
        if (zero_b) b.assign(b.size(), 0.0f);
        a.modules.push_back({l, m, Tensor::from_f32({2, I}, test::random_values(size_t(2 * I), seed++)),
                             Tensor::from_f32({O, 2}, std::move(b))});
      }
    }
  return a;
}

}  // namespace

TEST_CASE("lora: the unmerged term is the product of the merged weight, forward and backward") {
  const int64_t N = 9, I = 24, O = 20, r = 3;
  const float scale = 0.75f;
  const auto W = test::random_values(size_t(O * I), 1), A = test::random_values(size_t(r * I), 2),
             B = test::random_values(size_t(O * r), 3), x = test::random_values(size_t(N * I), 4),
             dy = test::random_values(size_t(N * O), 5);
  const auto Wm = merged(W, A, B, scale, I, O, r);
  std::vector<float> want(size_t(N * O)), got(want.size());
  ops::matmul_forward<float>(want.data(), x.data(), Wm.data(), nullptr, N, I, O);
  ops::matmul_forward<float>(got.data(), x.data(), W.data(), nullptr, N, I, O);
  ops::lora_forward(got.data(), x.data(), A.data(), B.data(), scale, N, I, O, r);
  CHECK(max_relative_error(got, want) < 1e-5);

  // The inputs' gradient is the merged weight's; A's and B's follow from W's by the chain rule.
  std::vector<float> want_in = test::random_values(size_t(N * I), 6), got_in = want_in;  // added into
  std::vector<float> d_W(size_t(O * I), 0.0f);
  ops::matmul_backward<float>(want_in.data(), d_W.data(), nullptr, dy.data(), x.data(), Wm.data(), N, I, O);
  ops::matmul_backward<float>(got_in.data(), nullptr, nullptr, dy.data(), nullptr, W.data(), N, I, O);
  std::vector<float> d_A = test::random_values(size_t(r * I), 7), d_B = test::random_values(size_t(O * r), 8);
  std::vector<float> want_A = d_A, want_B = d_B;  // added into
  chain_rule(want_A, want_B, d_W, A, B, scale, I, O, r);
  ops::lora_backward(got_in.data(), d_A.data(), d_B.data(), dy.data(), x.data(), A.data(), B.data(), scale, N, I, O, r);
  CHECK(max_relative_error(got_in, want_in) < 1e-5);
  CHECK(max_relative_error(d_A, want_A) < 1e-5);
  CHECK(max_relative_error(d_B, want_B) < 1e-5);
}

TEST_CASE("lora: the model's gradients of A and B follow the merged model's weight gradients by the chain rule") {
  const auto ckpt = test::random_checkpoint(test::tiny_config("qwen2"), 34);
  const ModelConfig& c = ckpt->config();
  const LoraAdapter adapter = random_adapter(c, false);
  const float scale = float(adapter.config.scaling());
  StoredWeights stored = load_stored_weights(*ckpt);
  Weights<float> merged_w = load_weights<float>(*ckpt);
  std::vector<std::vector<float>> d_a, d_b;  // each module's, added into by the backward
  for (const LoraModule& m : adapter.modules) {
    d_a.emplace_back(size_t(m.a.numel()), 0.0f);
    d_b.emplace_back(size_t(m.b.numel()), 0.0f);
  }
  for (size_t i = 0; i < adapter.modules.size(); ++i) {
    const LoraModule& m = adapter.modules[i];
    auto term = std::make_shared<LowRank>(LowRank{m.a.to_f32_vector(), m.b.to_f32_vector(), 2, scale, d_a[i].data(), d_b[i].data(), {}});
    const TensorId id{lora_module_role(m.module), int(m.layer)};
    tensor_slot(stored, id) = tensor_slot(stored, id).with_low_rank(term);
    std::vector<float>& W = tensor_slot(merged_w, id);
    W = merged(W, term->a, term->b, scale, m.a.dim(1), m.b.dim(0), 2);
  }
  const StoredModel model(c, std::move(stored), "<adapted>");
  Model merged_model(c, std::move(merged_w), "<merged>");
  std::vector<int32_t> targets(kIds.begin() + 1, kIds.end());
  targets.push_back(ops::kIgnoreIndex);
  const Batch batch = pack({kIds});
  Weights<float> none;  // every base tensor frozen
  parameters(none, c);
  Weights<float> all = zeros_like(merged_model.weights(), c);
  const double got_loss = model.loss_and_grad(batch, targets, none).ce();
  const double want_loss = merged_model.loss_and_grad(batch, targets, all).ce();
  CHECK(got_loss == doctest::Approx(want_loss).epsilon(1e-5));
  for (size_t i = 0; i < adapter.modules.size(); ++i) {
    const LoraModule& m = adapter.modules[i];
    CAPTURE(m.module);
    CAPTURE(m.layer);
    const std::vector<float>& d_W = tensor_slot(all, {lora_module_role(m.module), int(m.layer)});
    const int64_t O = m.b.dim(0), I = m.a.dim(1), r = 2;
    std::vector<float> want_a(size_t(r * I), 0.0f), want_b(size_t(O * r), 0.0f);
    chain_rule(want_a, want_b, d_W, m.a.to_f32_vector(), m.b.to_f32_vector(), scale, I, O, r);
    CHECK(max_relative_error(d_a[i], want_a) < 1e-4);
    CHECK(max_relative_error(d_b[i], want_b) < 1e-4);
  }
}

TEST_CASE("lora: an adapter folder on the inference engine computes the merged model, B = 0 the base's bits") {
  test::ScratchDir dir;
  const auto ckpt = test::random_checkpoint(test::tiny_config("qwen2"), 31);
  const ModelConfig& c = ckpt->config();
  const LoraAdapter adapter = random_adapter(c, false);
  write_peft_adapter(adapter, dir / "adapter", false);
  const auto engine = make_cpu_inference_engine(*ckpt, Precision::F32, dir / "adapter");

  // The f32 model with every adapted matrix merged by hand.
  Weights<float> w = load_weights<float>(*ckpt);
  const float scale = float(adapter.config.scaling());
  for (const LoraModule& m : adapter.modules) {
    std::vector<float>& W = tensor_slot(w, {lora_module_role(m.module), int(m.layer)});
    W = merged(W, m.a.to_f32_vector(), m.b.to_f32_vector(), scale, m.a.dim(1), m.b.dim(0), 2);
  }
  const Model merged_model(c, std::move(w), "<merged>");
  const Batch batch = pack({kIds});
  const auto want = merged_model.forward(batch);
  CHECK(max_relative_error(engine->forward(batch), want) < 1e-5);
  CHECK(max_relative_error(engine->forward(batch), Model(*ckpt).forward(batch)) > 1e-3);  // it moved the logits
  // Decoding (the dot path of at most 4 rows) adds the same term.
  const auto decoder = engine->decoder(16);
  const int64_t V = c.vocab_size;
  for (size_t n = 0; n < kIds.size(); ++n) {
    CAPTURE(n);
    const std::vector<float> step = decoder->append(std::span<const int32_t>(&kIds[n], 1));
    CHECK(max_relative_error(step, std::vector<float>(want.begin() + int64_t(n) * V, want.begin() + int64_t(n + 1) * V)) < 1e-5);
  }

  write_peft_adapter(random_adapter(c, true), dir / "zero", false);
  const auto zero = make_cpu_inference_engine(*ckpt, Precision::F32, dir / "zero")->forward(batch);
  const auto base = make_cpu_inference_engine(*ckpt)->forward(batch);
  CHECK(std::memcmp(zero.data(), base.data(), base.size() * sizeof(float)) == 0);

  // An adapter for another model is refused, naming its folder.
  CHECK_THROWS_AS(make_cpu_inference_engine(*test::random_checkpoint(test::tiny_config("mixtral"), 32), Precision::F32,
                                            dir / "adapter"),
                  InputError);
  CHECK_THROWS_AS(load_engine(*ckpt, make_cpu_engine, TrainSetup{}, std::nullopt, dir / "adapter"), UsageError);
}

TEST_CASE("lora: merging an adapter gives the model that computes the adapter's logits, other tensors as stored") {
  test::ScratchDir dir;
  const auto ckpt = test::random_checkpoint(test::tiny_config("llama"), 33, DType::BF16);
  write_peft_adapter(random_adapter(ckpt->config(), false), dir / "adapter", false);
  const auto merged = merge_adapter(*ckpt, dir / "adapter");
  const Batch batch = pack({kIds});
  const auto want = make_cpu_inference_engine(*ckpt, Precision::F32, dir / "adapter")->forward(batch);
  CHECK(max_relative_error(Model(*merged).forward(batch), want) < 1e-5);
  for (const TensorInfo& t : merged->tensors()) {
    CAPTURE(t.name);
    const Role role = parse_tensor_name(t.name, Scheme::HF)->role;
    const bool adapted = role == Role::Q || role == Role::V || role == Role::Gate || role == Role::Down;
    if (t.shape.size() != 2) continue;  // vectors: held (and written) in f32
    CHECK((t.dtype == DType::F32) == adapted);
    if (!adapted) CHECK(test::same_tensor(merged->load(t.name), ckpt->load(t.name)));
  }
}

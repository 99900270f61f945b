// The LoRA-MoE model (a MixLoRA folder over a dense base): experts that are all one LoRA compute
// the dense LoRA model, experts with B = 0 the base; the merged Mixtral (export --merge-adapter)
// computes its logits; its gradients of A, B and the routers are the merged Mixtral's by the
// chain rule; and the training engine's steps move the adapter, which reads back as trained.
#include <doctest/doctest.h>

#include <array>
#include <cmath>

#include "core/option_table.hpp"
#include "formats/peft_adapter.hpp"
#include "tests/common/fixtures.hpp"
#include "tests/trainer/lora_reference.hpp"
#include "trainer/engine.hpp"
#include "trainer/lora_init.hpp"
#include "trainer/model.hpp"
#include "trainer/parameters.hpp"
#include "trainer/stored_model.hpp"
#include "trainer/stored_weights.hpp"

using namespace upcycle;
using test::max_relative_error;

namespace {

const std::vector<int32_t> kIds = {1, 7, 5, 3, 6, 2, 4, 7, 0, 5, 2, 2, 6};
constexpr int64_t kExperts = 3, kTopK = 2, kRank = 2;

std::vector<int32_t> next_tokens(const std::vector<int32_t>& ids) {
  std::vector<int32_t> t(ids.begin() + 1, ids.end());
  t.push_back(ops::kIgnoreIndex);
  return t;
}

// A MixLoRA adapter over the dense `c`: terms on q and v shared, every expert's on gate, up and
// down, random A and B, and random routers. With `same`, every expert has expert 0's terms.
LoraAdapter random_mixlora(const ModelConfig& c, bool same) {
  LoraAdapter a;
  a.config.rank = kRank;
  a.config.alpha = 3;
  a.config.target_modules = {"q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"};
  a.config.experts = kExperts;
  a.config.top_k = kTopK;
  uint64_t seed = 50;
  auto random_module = [&](int64_t l, const std::string& m, int64_t e) {
    const Shape w = *lora_module_shape(c, m);
    seed += 2;
    return LoraModule{l, m, Tensor::from_f32({kRank, w[1]}, test::random_values(size_t(kRank * w[1]), seed)),
                      Tensor::from_f32({w[0], kRank}, test::random_values(size_t(w[0] * kRank), seed + 1)), e};
  };
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (const char* m : {"q_proj", "v_proj"}) a.modules.push_back(random_module(l, m, -1));
    const size_t first = a.modules.size();  // expert 0's
    for (int64_t e = 0; e < kExperts; ++e)
      for (size_t j = 0; j < 3; ++j) {
        const char* m = std::array{"gate_proj", "up_proj", "down_proj"}[j];
        LoraModule module = same && e > 0 ? a.modules[first + j] : random_module(l, m, e);
        module.expert = e;
        a.modules.push_back(std::move(module));
      }
    a.routers.push_back(Tensor::from_f32({kExperts, c.hidden_size},
                                         test::random_values(size_t(kExperts * c.hidden_size), 900 + uint64_t(l))));
  }
  return a;
}

// The plain LoRA of its shared terms and expert 0's.
LoraAdapter expert_zero(const LoraAdapter& moe) {
  LoraAdapter a{moe.config, {}, {}};
  a.config.experts = a.config.top_k = 0;
  for (const LoraModule& m : moe.modules)
    if (m.expert <= 0) a.modules.push_back({m.layer, m.module, m.a, m.b, -1});
  return a;
}

}  // namespace

TEST_CASE("lora_moe model: experts that are all one LoRA compute the dense LoRA model, forward and decoding") {
  test::ScratchDir dir;
  const auto ckpt = test::random_checkpoint(test::tiny_config("llama"), 61);
  const LoraAdapter moe = random_mixlora(ckpt->config(), true);
  write_peft_adapter(moe, dir / "moe", false);
  write_peft_adapter(expert_zero(moe), dir / "dense", false);
  const auto engine = make_cpu_inference_engine(*ckpt, Precision::F32, dir / "moe");
  CHECK(engine->config().model_type == "mixtral");
  CHECK(engine->config().num_local_experts == kExperts);
  const Batch batch = pack({kIds});
  const auto want = make_cpu_inference_engine(*ckpt, Precision::F32, dir / "dense")->forward(batch);
  const auto got = engine->forward(batch);
  CHECK(max_relative_error(got, want) < 1e-5);
  CHECK(max_relative_error(got, make_cpu_inference_engine(*ckpt)->forward(batch)) > 1e-3);  // the terms act
  const auto decoder = engine->decoder(32);
  const int64_t V = ckpt->config().vocab_size;
  for (size_t n = 0; n < kIds.size(); ++n) {
    CAPTURE(n);
    const auto step = decoder->append(std::span<const int32_t>(&kIds[n], 1));
    CHECK(max_relative_error(step, std::vector<float>(want.begin() + int64_t(n) * V, want.begin() + int64_t(n + 1) * V)) <
          1e-5);
  }
}

TEST_CASE("lora_moe model: a fresh LoRA-MoE (B = 0, random routers) computes the base model") {
  test::ScratchDir dir;
  const auto ckpt = test::random_checkpoint(test::tiny_config("mistral"), 62);
  LoraConfig asked;
  asked.rank = kRank;
  asked.experts = 4;
  const LoraConfig c = complete_lora_config(asked, ckpt->config());
  CHECK(c.top_k == 2);
  const LoraAdapter fresh = init_lora_adapter(ckpt->config(), c, 7);
  CHECK(fresh.routers.size() == size_t(ckpt->config().num_hidden_layers));
  write_peft_adapter(fresh, dir / "fresh", false);
  const Batch batch = pack({kIds});
  CHECK(max_relative_error(make_cpu_inference_engine(*ckpt, Precision::F32, dir / "fresh")->forward(batch),
                           make_cpu_inference_engine(*ckpt)->forward(batch)) < 1e-6);
  // Settings a LoRA-MoE cannot take.
  LoraConfig attention_only = asked;
  attention_only.target_modules = {"q_proj", "v_proj"};
  CHECK_THROWS_AS(complete_lora_config(attention_only, ckpt->config()), OptionError);
  CHECK_THROWS_AS(complete_lora_config(asked, test::tiny_config("qwen2")), OptionError);    // attention biases
  CHECK_THROWS_AS(complete_lora_config(asked, test::tiny_config("mixtral")), OptionError);  // already an MoE
}

TEST_CASE("lora_moe model: the merged Mixtral (export --merge-adapter) computes the LoRA-MoE's logits") {
  test::ScratchDir dir;
  const auto ckpt = test::random_checkpoint(test::tiny_config("llama"), 63, DType::BF16);
  write_peft_adapter(random_mixlora(ckpt->config(), false), dir / "moe", false);
  const auto merged = merge_adapter(*ckpt, dir / "moe");
  CHECK(merged->config().model_type == "mixtral");
  CHECK(merged->config().num_experts_per_tok == kTopK);
  const Batch batch = pack({kIds});
  const auto want = make_cpu_inference_engine(*ckpt, Precision::F32, dir / "moe")->forward(batch);
  CHECK(max_relative_error(Model(*merged).forward(batch), want) < 1e-5);
  // Experts that differ: expert 1's merged gate is not expert 0's.
  const Tensor g0 = merged->load("model.layers.0.block_sparse_moe.experts.0.w1.weight");
  const Tensor g1 = merged->load("model.layers.0.block_sparse_moe.experts.1.w1.weight");
  CHECK_FALSE(test::same_tensor(g0, g1));
}

TEST_CASE("lora_moe model: over qwen3 the merged export is a Qwen3-MoE with its q/k norms, and computes the same") {
  test::ScratchDir dir;
  auto j = test::tiny_config("qwen3").to_json();
  j["head_dim"] = 6;
  const auto ckpt = test::random_checkpoint(ModelConfig::from_json(j, "<qwen3>"), 65);
  write_peft_adapter(random_mixlora(ckpt->config(), false), dir / "moe", false);
  const auto merged = merge_adapter(*ckpt, dir / "moe");
  CHECK(merged->config().model_type == "qwen3_moe");
  CHECK(merged->config().norm_topk_prob);
  CHECK(merged->find("model.layers.1.self_attn.k_norm.weight") != nullptr);
  CHECK(merged->find("model.layers.1.mlp.experts.2.gate_proj.weight") != nullptr);
  const Batch batch = pack({kIds});
  const auto want = make_cpu_inference_engine(*ckpt, Precision::F32, dir / "moe")->forward(batch);
  CHECK(max_relative_error(Model(*merged).forward(batch), want) < 1e-5);
  // A qwen2 base has no LoRA-MoE: its MoE's shared expert would have no terms.
  const auto qwen2 = test::random_checkpoint(test::tiny_config("qwen2", true), 66);
  write_peft_adapter(random_mixlora(qwen2->config(), false), dir / "moe2", false);
  CHECK_THROWS_WITH_AS(merge_adapter(*qwen2, dir / "moe2"), doctest::Contains("shared expert"), InputError);
}

TEST_CASE("lora_moe model: the gradients of A, B and the routers are the merged Mixtral's by the chain rule") {
  const auto ckpt = test::random_checkpoint(test::tiny_config("llama"), 64);
  const LoraAdapter adapter = random_mixlora(ckpt->config(), false);
  const ModelConfig c = adapted_config(ckpt->config(), adapter, "<adapter>");
  const float scale = float(adapter.config.scaling());
  StoredWeights stored = load_stored_weights(*ckpt);
  const auto terms = apply_adapter(stored, adapter);
  std::vector<std::vector<float>> d_a, d_b;
  for (const auto& t : terms) {
    d_a.emplace_back(t->a.size(), 0.0f);
    d_b.emplace_back(t->b.size(), 0.0f);
  }
  for (size_t i = 0; i < terms.size(); ++i) {
    terms[i]->d_a = d_a[i].data();
    terms[i]->d_b = d_b[i].data();
  }
  test::ScratchDir dir;
  write_peft_adapter(adapter, dir / "moe", false);
  const auto merged = merge_adapter(*ckpt, dir / "moe");
  const StoredModel model(c, stored, "<lora-moe>");
  Model merged_model(*merged);
  const Batch batch = pack({kIds});
  Weights<float> routers;  // the routers' gradients alone
  parameters(routers, c);
  for (auto& l : routers.layers) l.router.assign(size_t(kExperts * c.hidden_size), 0.0f);
  Weights<float> all = zeros_like(merged_model.weights(), c);
  const double got = model.loss_and_grad(batch, next_tokens(kIds), routers).ce();
  const double want = merged_model.loss_and_grad(batch, next_tokens(kIds), all).ce();
  CHECK(got == doctest::Approx(want).epsilon(1e-5));
  for (size_t l = 0; l < routers.layers.size(); ++l) {
    CAPTURE(l);
    CHECK(max_relative_error(routers.layers[l].router, all.layers[l].router) < 1e-4);
  }
  for (size_t i = 0; i < adapter.modules.size(); ++i) {
    const LoraModule& m = adapter.modules[i];
    CAPTURE(m.layer);
    CAPTURE(m.module);
    CAPTURE(m.expert);
    const std::vector<float>& d_W = tensor_slot(all, lora_module_tensor(m));
    const int64_t O = m.b.dim(0), I = m.a.dim(1);
    std::vector<float> want_a(size_t(kRank * I), 0.0f), want_b(size_t(O * kRank), 0.0f);
    test::chain_rule(want_a, want_b, d_W, m.a.to_f32_vector(), m.b.to_f32_vector(), scale, I, O, kRank);
    CHECK(max_relative_error(d_a[i], want_a) < 1e-4);
    CHECK(max_relative_error(d_b[i], want_b) < 1e-4);
  }
}

TEST_CASE("lora_moe model: training moves the experts' terms and the routers, and the folder reads back as trained") {
  test::ScratchDir dir;
  const auto ckpt = test::random_checkpoint(test::tiny_config("llama"), 65);
  LoraConfig asked;
  asked.rank = kRank;
  asked.experts = kExperts;
  const LoraAdapter start = init_lora_adapter(ckpt->config(), complete_lora_config(asked, ckpt->config()), 3);
  const auto engine = make_cpu_lora_engine(*ckpt, start, {});
  CHECK(engine->config().is_moe());
  const Batch batch = pack({kIds});
  std::vector<double> losses;
  for (int s = 0; s < 4; ++s) {
    engine->zero_grads();
    losses.push_back(engine->accumulate(batch, next_tokens(kIds), {}).ce());
    engine->clip(1.0);
    engine->step(2e-2);
  }
  CHECK(losses.back() < losses.front());
  const LoraAdapter trained = *engine->trained_adapter();
  REQUIRE(trained.modules.size() == start.modules.size());
  REQUIRE(trained.routers.size() == start.routers.size());
  CHECK_FALSE(test::same_tensor(trained.routers[0], start.routers[0]));
  for (size_t i = 0; i < trained.modules.size(); ++i) {
    CHECK(trained.modules[i].expert == start.modules[i].expert);
    CHECK_FALSE(test::same_tensor(trained.modules[i].b, start.modules[i].b));  // B left zero
  }
  write_peft_adapter(trained, dir / "trained", false);
  const auto reread = make_cpu_inference_engine(*ckpt, Precision::F32, dir / "trained");
  CHECK(max_relative_error(reread->forward(batch), engine->forward(batch)) < 1e-6);
}

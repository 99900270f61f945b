// The forward pass of whole small models against an independent computation in double with
// plain loops; experts that are copies of one FFN against the dense model; packing against
// separate runs; and `upcycle forward` against Model::forward.
#include <doctest/doctest.h>

#include <algorithm>
#include <span>
#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/open_checkpoint.hpp"
#include "tests/common/fixtures.hpp"
#include "trainer/model.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

using Vec = std::vector<double>;

// The reference: reads each tensor from the checkpoint by role and computes token by token.
struct Reference {
  const Checkpoint& ckpt;
  const ModelConfig& c = ckpt.config();

  Vec get(Role role, int layer = -1, int expert = -1) const {
    const auto f = ckpt.load(tensor_name({role, layer, expert}, default_scheme(c))).to_f32_vector();
    return {f.begin(), f.end()};
  }
  // out[o] = Σ_i W[o,i]·x[i] (+ b[o]) for every row x of X [N,I]
  static std::vector<Vec> linear(const std::vector<Vec>& X, const Vec& W, const Vec* b = nullptr) {
    std::vector<Vec> out;
    for (const Vec& x : X) {
      Vec y(W.size() / x.size(), 0.0);
      for (size_t o = 0; o < y.size(); ++o) {
        for (size_t i = 0; i < x.size(); ++i) y[o] += W[o * x.size() + i] * x[i];
        if (b) y[o] += (*b)[o];
      }
      out.push_back(y);
    }
    return out;
  }
  std::vector<Vec> rmsnorm(const std::vector<Vec>& X, const Vec& w) const {
    std::vector<Vec> out;
    for (const Vec& x : X) {
      double ss = 0;
      for (double v : x) ss += v * v;
      const double r = 1 / std::sqrt(ss / double(x.size()) + c.rms_norm_eps);
      Vec y(x.size());
      for (size_t i = 0; i < x.size(); ++i) y[i] = w[i] * x[i] * r;
      out.push_back(y);
    }
    return out;
  }
  // Qwen3's norm of each head of D values in every row.
  std::vector<Vec> head_rmsnorm(const std::vector<Vec>& X, const Vec& w) const {
    const size_t D = size_t(c.head_dim);
    std::vector<Vec> out;
    for (const Vec& x : X) {
      Vec y;
      for (size_t h = 0; h < x.size(); h += D) {
        const Vec normed = rmsnorm({Vec(x.begin() + ptrdiff_t(h), x.begin() + ptrdiff_t(h + D))}, w)[0];
        y.insert(y.end(), normed.begin(), normed.end());
      }
      out.push_back(y);
    }
    return out;
  }
  // Rotate-half with explicit cos and sin of pos·theta^(-2i/D), every head of every row.
  void rope(std::vector<Vec>& X) const {
    const int64_t D = c.head_dim;
    for (size_t n = 0; n < X.size(); ++n)
      for (size_t h = 0; h < X[n].size() / size_t(D); ++h)
        for (int64_t i = 0; i < D / 2; ++i) {
          const double angle = double(n) * std::pow(c.rope_theta, -2.0 * double(i) / double(D));
          double& a = X[n][h * size_t(D) + size_t(i)];
          double& b = X[n][h * size_t(D) + size_t(i + D / 2)];
          const double a0 = a, b0 = b;
          a = a0 * std::cos(angle) - b0 * std::sin(angle);
          b = b0 * std::cos(angle) + a0 * std::sin(angle);
        }
  }
  // Softmax attention with an explicit causal (and sliding-window) mask, GQA.
  std::vector<Vec> attention(const std::vector<Vec>& Q, const std::vector<Vec>& K, const std::vector<Vec>& V) const {
    const size_t N = Q.size(), D = size_t(c.head_dim), nH = size_t(c.num_attention_heads);
    const size_t group = nH / size_t(c.num_key_value_heads);
    std::vector<Vec> out(N, Vec(nH * D, 0.0));
    for (size_t n = 0; n < N; ++n)
      for (size_t h = 0; h < nH; ++h) {
        const size_t g = h / group;
        Vec s(N, -INFINITY);
        const size_t first = c.sliding_window && n >= size_t(*c.sliding_window) ? n + 1 - size_t(*c.sliding_window) : 0;
        for (size_t j = first; j <= n; ++j) {
          s[j] = 0;
          for (size_t d = 0; d < D; ++d) s[j] += Q[n][h * D + d] * K[j][g * D + d];
          s[j] /= std::sqrt(double(D));
        }
        const double m = *std::max_element(s.begin(), s.end());
        double z = 0;
        for (double& v : s) z += (v = std::exp(v - m));
        for (size_t j = first; j <= n; ++j)
          for (size_t d = 0; d < D; ++d) out[n][h * D + d] += s[j] / z * V[j][g * D + d];
      }
    return out;
  }
  static Vec swiglu_ffn(const Vec& x, const Vec& gate, const Vec& up, const Vec& down) {
    const Vec g = linear({x}, gate)[0], u = linear({x}, up)[0];
    Vec act(g.size());
    for (size_t i = 0; i < g.size(); ++i) act[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
    return linear({act}, down)[0];
  }
  // Top-k of the softmax, renormalised (the softmax's normaliser cancels) or not; qwen2_moe adds
  // its shared expert times the sigmoid of its gate.
  Vec moe_ffn(const Vec& x, int l) const {
    const Vec logits = linear({x}, get(Role::Router, l))[0];
    std::vector<size_t> order(logits.size());
    for (size_t e = 0; e < order.size(); ++e) order[e] = e;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return logits[a] > logits[b]; });
    const size_t k = size_t(c.num_experts_per_tok);
    double z = 0;
    for (size_t j = 0; j < (c.norm_topk_prob ? k : order.size()); ++j) z += std::exp(logits[order[j]] - logits[order[0]]);
    Vec y(x.size(), 0.0);
    if (c.has_shared_expert()) {
      const Vec f = swiglu_ffn(x, get(Role::SharedGate, l), get(Role::SharedUp, l), get(Role::SharedDown, l));
      const double gate = 1 / (1 + std::exp(-linear({x}, get(Role::SharedRouter, l))[0][0]));
      for (size_t i = 0; i < y.size(); ++i) y[i] = gate * f[i];
    }
    for (size_t j = 0; j < k; ++j) {
      const int e = int(order[j]);
      const Vec f = swiglu_ffn(x, get(Role::ExpertGate, l, e), get(Role::ExpertUp, l, e), get(Role::ExpertDown, l, e));
      const double w = std::exp(logits[order[j]] - logits[order[0]]) / z;
      for (size_t i = 0; i < y.size(); ++i) y[i] += w * f[i];
    }
    return y;
  }
  static void add(std::vector<Vec>& a, const std::vector<Vec>& b) {
    for (size_t n = 0; n < a.size(); ++n)
      for (size_t i = 0; i < a[n].size(); ++i) a[n][i] += b[n][i];
  }
  void layer(std::vector<Vec>& x, int l) const {
    const auto in = rmsnorm(x, get(Role::AttnNorm, l));
    const bool bias = c.attention_bias;
    const Vec qb = bias ? get(Role::QBias, l) : Vec{}, kb = bias ? get(Role::KBias, l) : Vec{};
    const Vec vb = bias ? get(Role::VBias, l) : Vec{};
    auto q = linear(in, get(Role::Q, l), bias ? &qb : nullptr), k = linear(in, get(Role::K, l), bias ? &kb : nullptr);
    if (c.qk_norm()) {
      q = head_rmsnorm(q, get(Role::QNorm, l));
      k = head_rmsnorm(k, get(Role::KNorm, l));
    }
    rope(q);
    rope(k);
    add(x, linear(attention(q, k, linear(in, get(Role::V, l), bias ? &vb : nullptr)), get(Role::O, l)));
    const auto f = rmsnorm(x, get(Role::FfnNorm, l));
    std::vector<Vec> y;
    for (const Vec& row : f)
      y.push_back(c.is_moe() ? moe_ffn(row, l)
                             : swiglu_ffn(row, get(Role::Gate, l), get(Role::Up, l), get(Role::Down, l)));
    add(x, y);
  }
  // logits [N, V] of one sequence, flattened
  Vec logits(const std::vector<int32_t>& ids) const {
    const Vec emb = get(Role::TokenEmbedding);
    const size_t H = size_t(c.hidden_size);
    std::vector<Vec> x;
    for (int32_t id : ids) x.emplace_back(emb.begin() + id * int64_t(H), emb.begin() + (id + 1) * int64_t(H));
    for (int l = 0; l < int(c.num_hidden_layers); ++l) layer(x, l);
    const Vec head = c.tie_word_embeddings ? emb : get(Role::LmHead);
    Vec out;
    for (const Vec& row : linear(rmsnorm(x, get(Role::FinalNorm)), head)) out.insert(out.end(), row.begin(), row.end());
    return out;
  }
};

const std::vector<int32_t> kTokens = {1, 7, 39, 3, 3, 12, 0, 25, 18};

// max |a − b| / max |b|
double relative_error(std::span<const float> a, const Vec& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double(a[i]) - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

void check_against_reference(const Checkpoint& ckpt) {
  const Model model(ckpt);
  const Vec ref = Reference{ckpt}.logits(kTokens);
  CHECK(relative_error(model.forward(pack({kTokens})), ref) <= 1e-4);
}

// A Mixtral whose every expert is the dense model's FFN, sharing its other tensors.
std::unique_ptr<Checkpoint> copied_experts(const Checkpoint& dense) {
  const ModelConfig config = tiny_config("mixtral");
  std::vector<TensorInfo> infos;
  for (const auto& e : expected_tensors(config)) infos.push_back({e.name, DType::F32, e.shape});
  auto loader = [&dense](const TensorInfo& info) {
    TensorId id = *parse_tensor_name(info.name, Scheme::HF);
    if (id.role == Role::Router) return Tensor::from_f32(info.shape, random_values(*shape_elements(info.shape), 5));
    return dense.load(tensor_name({*role_info(id.role).dense, id.layer}, Scheme::HF));  // the role table's
  };
  return std::make_unique<ComputedCheckpoint>(config, std::move(infos), loader);
}

}  // namespace

TEST_CASE("model: llama logits equal the double-precision reference") {
  check_against_reference(*random_checkpoint(tiny_config("llama"), 1));
}

TEST_CASE("model: qwen2 with q/k/v biases and tied embeddings equals the reference") {
  const ModelConfig config = tiny_config("qwen2", true);
  REQUIRE(config.attention_bias);
  check_against_reference(*random_checkpoint(config, 2));
}

// Qwen3: q and k normalised per head before rope, head_dim 6 apart from hidden / heads = 4.
ModelConfig qwen3_config() {
  auto j = tiny_config("qwen3").to_json();
  j["head_dim"] = 6;
  return ModelConfig::from_json(j, "<qwen3>");
}

TEST_CASE("model: qwen3 with per-head q/k norms and its own head_dim equals the reference") {
  const ModelConfig config = qwen3_config();
  REQUIRE(config.qk_norm());
  REQUIRE(config.q_dim() != config.hidden_size);
  check_against_reference(*random_checkpoint(config, 4));
}

TEST_CASE("model: a qwen3_moe made from qwen3 (its names, per-head norms, renormalised top-k) equals the reference") {
  const ModelConfig config = upcycled_config(qwen3_config(), {4, 2, 0.01}, "<qwen3>");
  REQUIRE(config.model_type == "qwen3_moe");
  REQUIRE(config.expert_intermediate_size() == qwen3_config().intermediate_size);
  const auto ckpt = random_checkpoint(config, 5);
  REQUIRE(ckpt->find("model.layers.1.mlp.experts.3.down_proj.weight") != nullptr);
  check_against_reference(*ckpt);
}

// Qwen2-MoE (tiny_config's), norm_topk_prob as given.
ModelConfig qwen2_moe_config(bool norm_topk_prob) {
  auto j = tiny_config("qwen2_moe", true).to_json();
  j["norm_topk_prob"] = norm_topk_prob;
  return ModelConfig::from_json(j, "<qwen2_moe>");
}

TEST_CASE("model: qwen2_moe (shared expert, sigmoid gate, top-k renormalised or not) equals the reference") {
  for (bool norm : {false, true}) {
    CAPTURE(norm);
    const ModelConfig config = qwen2_moe_config(norm);
    REQUIRE(config.has_shared_expert());
    const auto ckpt = random_checkpoint(config, 13);
    REQUIRE(ckpt->find("model.layers.1.mlp.shared_expert_gate.weight") != nullptr);
    check_against_reference(*ckpt);
  }
}

TEST_CASE("model: a qwen2_moe made from qwen2, its shared expert's down zero and its experts copies, is the qwen2") {
  const auto dense = random_checkpoint(tiny_config("qwen2", true), 14);
  const ModelConfig config = upcycled_config(dense->config(), {4, 2, 0.01}, "<qwen2>");
  REQUIRE(config.model_type == "qwen2_moe");
  REQUIRE(config.norm_topk_prob);
  std::vector<TensorInfo> infos;
  for (const auto& e : expected_tensors(config)) infos.push_back({e.name, DType::F32, e.shape});
  auto loader = [&](const TensorInfo& info) {
    const TensorId id = *parse_tensor_name(info.name, Scheme::Qwen2Moe);
    if (id.role == Role::Router || id.role == Role::SharedRouter || id.role == Role::SharedDown)
      return Tensor::from_f32(info.shape, id.role == Role::SharedDown ? std::vector<float>(*shape_elements(info.shape))
                                                                       : random_values(*shape_elements(info.shape), 5));
    return dense->load(tensor_name({*role_info(id.role).dense, id.layer}, Scheme::HF));
  };
  const ComputedCheckpoint moe(config, std::move(infos), loader);
  const auto a = Model(moe).forward(pack({kTokens}));
  const auto b = Model(*dense).forward(pack({kTokens}));
  CHECK(relative_error(a, Vec(b.begin(), b.end())) <= 1e-5);
}

TEST_CASE("model: mistral with a sliding window of 3 equals the reference") {
  auto j = tiny_config("mistral").to_json();
  j["sliding_window"] = 3;
  check_against_reference(*random_checkpoint(ModelConfig::from_json(j, "<mistral>"), 10));
}

TEST_CASE("model: mixtral's fused expert layout gives the per-expert layout's logits") {
  const ModelConfig config = tiny_config("mixtral");
  const auto per_expert = random_checkpoint(config, 11);
  std::vector<TensorInfo> infos;
  for (const auto& e : expected_tensors(config, Scheme::HFFused)) infos.push_back({e.name, DType::F32, e.shape});
  auto loader = [&](const TensorInfo& info) {
    const TensorId id = *parse_tensor_name(info.name, Scheme::HFFused);
    if (id.role != Role::ExpertsGateUp && id.role != Role::ExpertsDown)
      return per_expert->load(tensor_name(id, Scheme::HF));
    std::vector<float> all;  // [E, 2I, H]: w1 rows then w3 rows; or [E, H, I]
    for (int e = 0; e < int(config.num_local_experts); ++e)
      for (Role r : id.role == Role::ExpertsDown ? std::vector{Role::ExpertDown}
                                                 : std::vector{Role::ExpertGate, Role::ExpertUp}) {
        const auto part = per_expert->load(tensor_name({r, id.layer, e}, Scheme::HF)).to_f32_vector();
        all.insert(all.end(), part.begin(), part.end());
      }
    return Tensor::from_f32(info.shape, all);
  };
  const ComputedCheckpoint fused(config, std::move(infos), loader);
  CHECK(Model(fused).forward(pack({kTokens})) == Model(*per_expert).forward(pack({kTokens})));
}

TEST_CASE("model: mixtral with 4 experts top-2 equals the reference") {
  check_against_reference(*random_checkpoint(tiny_config("mixtral"), 3));
}

TEST_CASE("model: a bf16-stored checkpoint equals the reference on its rounded weights") {
  check_against_reference(*random_checkpoint(tiny_config("llama"), 4, DType::BF16));
}

TEST_CASE("model: a sharded checkpoint equals the reference") {
  ScratchDir dir;
  WriteOptions opts;
  opts.progress = false;
  opts.shard_bytes = 4096;  // a shard per tensor or two
  write_checkpoint(*random_checkpoint(tiny_config("llama"), 12), dir / "sharded", opts);
  const auto ckpt = open_checkpoint(dir / "sharded");
  REQUIRE(fs::exists(dir / "sharded" / "model.safetensors.index.json"));
  check_against_reference(*ckpt);
}

TEST_CASE("model: a mixtral of copies of one dense FFN gives the dense model's logits") {
  const auto dense = random_checkpoint(tiny_config("llama"), 6);
  const auto moe = copied_experts(*dense);
  const auto a = Model(*moe).forward(pack({kTokens}));
  const auto b = Model(*dense).forward(pack({kTokens}));
  CHECK(relative_error(a, Vec(b.begin(), b.end())) <= 1e-5);
}

TEST_CASE("model: two packed sequences give the logits of each run alone") {
  const Model model(*random_checkpoint(tiny_config("llama"), 7));
  const std::vector<int32_t> s1(kTokens.begin(), kTokens.begin() + 4), s2(kTokens.begin() + 4, kTokens.end());
  auto alone = model.forward(pack({s1}));
  const auto second = model.forward(pack({s2}));
  alone.insert(alone.end(), second.begin(), second.end());
  const auto packed = model.forward(pack({s1, s2}));
  CHECK(relative_error(packed, Vec(alone.begin(), alone.end())) <= 1e-6);
}

TEST_CASE("model: upcycle forward writes [tokens, vocab] float32 logits equal to Model::forward") {
  ScratchDir dir;
  const auto ckpt = random_checkpoint(tiny_config("qwen2", true), 8);
  WriteOptions opts;
  opts.progress = false;
  write_checkpoint(*ckpt, dir / "model", opts);
  const RunResult r = run_upcycle("forward --model '" + (dir / "model").string() + "' --tokens 1,7,39,3 --out '" +
                                  (dir / "logits.f32").string() + "'");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const std::string bytes = read_file(dir / "logits.f32");
  const auto expected = Model(*open_checkpoint(dir / "model")).forward(pack({{1, 7, 39, 3}}));
  REQUIRE(bytes.size() == 4 * 40 * sizeof(float));
  CHECK(std::memcmp(bytes.data(), expected.data(), bytes.size()) == 0);

  const RunResult bad = run_upcycle("forward --model '" + (dir / "model").string() + "' --tokens 1,40 --out '" +
                                    (dir / "bad.f32").string() + "'");
  CHECK(bad.code == 2);
  CHECK(bad.err.find("token 40 is outside the vocabulary") != std::string::npos);
  CHECK(run_upcycle("forward --model x --tokens 1,a --out y").code == 1);
  const RunResult bf16 = run_upcycle("forward --model '" + (dir / "model").string() + "' --tokens 1,7,39,3,5,8 --out '" +
                                     (dir / "bf16.f32").string() + "' --precision bf16");
  CHECK_MESSAGE(bf16.code == 0, bf16.err);
  const RunResult fp8 = run_upcycle("forward --model '" + (dir / "model").string() + "' --tokens 1 --out '" +
                                    (dir / "fp8.f32").string() + "' --precision fp8");
  CHECK(fp8.code == 1);
  CHECK(fp8.err.find("--precision: 'fp8' is not f32 or bf16") != std::string::npos);
}

TEST_CASE("model: rope_scaling from the config maps to the rope op's scaling") {
  auto with_scaling = [](nlohmann::ordered_json scaling) {
    auto j = tiny_config("llama").to_json();
    j["rope_scaling"] = std::move(scaling);
    return rope_scaling(ModelConfig::from_json(j, "<llama>"), "config.json");
  };
  CHECK(rope_scaling(tiny_config("llama"), "config.json").type == ops::RopeScaling::Type::Default);
  const auto linear = with_scaling({{"type", "linear"}, {"factor", 2.0}});
  CHECK(linear.type == ops::RopeScaling::Type::Linear);
  CHECK(linear.factor == 2.0);
  const auto llama3 = with_scaling({{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                                    {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}});
  CHECK(llama3.type == ops::RopeScaling::Type::Llama3);
  CHECK(llama3.factor == 8.0);
  CHECK(llama3.original_max_position_embeddings == 8192);
  CHECK_THROWS_AS(with_scaling({{"rope_type", "yarn"}, {"factor", 4.0}}), InputError);
}

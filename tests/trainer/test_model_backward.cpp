// Whole-model gradients against central differences in double: dense and MoE, biases, tied
// embeddings, a sliding window, packed sequences, the router's auxiliary losses, UpIT's router
// pre-optimisation loss, frozen parts, and micro-batches that add up to their packed batch.
#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>

#include "tests/common/fixtures.hpp"
#include "tests/trainer/gradcheck.hpp"
#include "trainer/model.hpp"
#include "trainer/ops/cross_entropy.hpp"
#include "trainer/parameters.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

const std::vector<std::vector<int32_t>> kSequences = {{1, 7, 39, 3, 3, 12}, {0, 25, 18, 5, 30}};

// Next-token targets of packed sequences, every third position ignored as a prompt would be.
std::vector<int32_t> targets_of(const std::vector<std::vector<int32_t>>& seqs) {
  std::vector<int32_t> t;
  for (const auto& s : seqs)
    for (size_t i = 0; i < s.size(); ++i)
      t.push_back(i + 1 < s.size() && i % 3 != 1 ? s[i + 1] : ops::kIgnoreIndex);
  return t;
}

// UpIT's router targets for kSequences: every token of a sample gets the expert the sample was
// assigned to (sample 0: expert 1, sample 1: expert 3); sample 0's first token belongs to none.
std::vector<int32_t> router_targets_of(const std::vector<std::vector<int32_t>>& seqs) {
  const int32_t expert_of[] = {1, 3};
  std::vector<int32_t> t;
  for (size_t s = 0; s < seqs.size(); ++s)
    for (size_t i = 0; i < seqs[s].size(); ++i) t.push_back(s == 0 && i == 0 ? -1 : expert_of[s % 2]);
  return t;
}

// UpIT's pre-optimisation objective: 0.5 × LM loss + 0.5 × router BCE.
LossOptions upit_options(const std::vector<std::vector<int32_t>>& seqs) {
  LossOptions opts;
  opts.router_targets = router_targets_of(seqs);
  opts.router_bce_coef = 0.5;
  opts.ce_coef = 0.5;
  return opts;
}

ModelConfig with(const ModelConfig& base, const nlohmann::ordered_json& fields) {
  auto j = base.to_json();
  j.update(fields);
  return ModelConfig::from_json(j, "<test>");
}

// Up to 12 elements of each tensor, spread over it, plus the first rows the batch's tokens use
// for the embedding (most embedding rows get no gradient at all).
std::vector<size_t> probes(const Parameter<double>& p, const ModelConfig& c) {
  const size_t n = p.values->size();
  std::vector<size_t> at;
  for (size_t i = 0; i < std::min<size_t>(12, n); ++i) at.push_back(i * n / std::min<size_t>(12, n));
  if (p.tensor.id.role == Role::TokenEmbedding)
    for (size_t h = 0; h < size_t(c.hidden_size); h += 3) at.push_back(size_t(kSequences[0][1]) * size_t(c.hidden_size) + h);
  return at;
}

// Checks every unfrozen tensor's gradient to within `tol` relative; frozen ones must get no buffer.
void check_model_gradients(const ModelConfig& config, uint64_t seed, const LossOptions& opts = {},
                           const PartSet& frozen = {}, double tol = 1e-6) {
  Transformer<double> model(*random_checkpoint(config, seed));
  // Weights in [-1/2, 1/2): logits of a moderate size keep the loss's rounding noise well below
  // the gradients of the least used expert.
  for (auto& p : parameters(model.weights(), config))
    for (double& v : *p.values) v *= 0.5;
  const Batch batch = pack(kSequences);
  const std::vector<int32_t> targets = targets_of(kSequences);
  Weights<double> grads = zeros_like(model.weights(), config, frozen);
  model.loss_and_grad(batch, targets, grads, opts);
  auto objective = [&] {
    const LossReport r = model.loss(batch, targets, opts);
    return opts.ce_coef * r.ce() + r.aux + r.z + r.router_bce;
  };
  auto ps = parameters(model.weights(), config);
  auto gs = parameters(grads, config);
  for (size_t i = 0; i < ps.size(); ++i) {
    if (frozen[size_t(role_info(ps[i].tensor.id.role).part)]) {
      CHECK_MESSAGE(gs[i].values->empty(), ps[i].tensor.name << " is frozen but has a gradient");
      continue;
    }
    Vec analytic, numeric;
    for (size_t at : probes(ps[i], config)) {
      Vec x = {(*ps[i].values)[at]};
      auto loss_at = [&] {
        (*ps[i].values)[at] = x[0];
        return objective();
      };
      numeric.push_back(numeric_gradient(x, loss_at)[0]);
      (*ps[i].values)[at] = x[0];
      analytic.push_back((*gs[i].values)[at]);
    }
    INFO(ps[i].tensor.name);
    check_gradient(ps[i].tensor.name.c_str(), analytic, numeric, tol);
  }
}

}  // namespace

TEST_CASE("model backward: llama's gradients equal finite differences") {
  check_model_gradients(tiny_config("llama"), 21);
}

TEST_CASE("model backward: qwen2 with biases and tied embeddings") {
  check_model_gradients(tiny_config("qwen2", true), 22);
}

TEST_CASE("model backward: qwen3's per-head q/k norms, head_dim apart from hidden / heads") {
  check_model_gradients(with(tiny_config("qwen3"), {{"head_dim", 6}}), 24);
}

TEST_CASE("model backward: mistral with a sliding window of 3") {
  check_model_gradients(with(tiny_config("mistral"), {{"sliding_window", 3}}), 23);
}

TEST_CASE("model backward: mixtral with the load-balancing and z losses") {
  LossOptions opts;
  opts.z_loss_coef = 0.01;
  check_model_gradients(with(tiny_config("mixtral"), {{"router_aux_loss_coef", 0.1}}), 24, opts);
}

TEST_CASE("model backward: qwen2_moe's shared expert and its gate, top-k weights not renormalised") {
  LossOptions opts;
  opts.z_loss_coef = 0.01;
  const ModelConfig config = with(tiny_config("qwen2_moe", true), {{"router_aux_loss_coef", 0.1}});
  REQUIRE(!config.norm_topk_prob);
  REQUIRE(config.has_shared_expert());
  // Unnormalised, the experts' weights are the small probabilities themselves: their gradients
  // are a few times smaller against the loss's rounding than a Mixtral's.
  check_model_gradients(config, 29, opts, {}, 1e-5);
}

TEST_CASE("model backward: loss, which keeps only each layer's routing, reports what loss_and_grad does") {
  const ModelConfig config = with(tiny_config("mixtral"), {{"router_aux_loss_coef", 0.1}});
  Transformer<double> model(*random_checkpoint(config, 26));
  const Batch batch = pack(kSequences);
  const std::vector<int32_t> targets = targets_of(kSequences);
  LossOptions opts = upit_options(kSequences);
  opts.z_loss_coef = 0.01;
  Weights<double> grads = zeros_like(model.weights(), config);
  const LossReport trained = model.loss_and_grad(batch, targets, grads, opts), scored = model.loss(batch, targets, opts);
  CHECK(scored.ce_sum == trained.ce_sum);
  CHECK(scored.tokens == trained.tokens);
  CHECK(scored.aux == trained.aux);
  CHECK(scored.z == trained.z);
  CHECK(scored.router_bce == trained.router_bce);
  CHECK(scored.expert_tokens == trained.expert_tokens);
  CHECK(scored.router_entropy == trained.router_entropy);
  CHECK(scored.aux > 0);
  CHECK(scored.router_bce > 0);
}

TEST_CASE("model backward: recomputing each layer in the backward gives the same bits and the same report") {
  for (const char* type : {"llama", "mixtral"}) {
    CAPTURE(type);
    const ModelConfig config = with(tiny_config(type), {{"router_aux_loss_coef", 0.1}});
    const Transformer<float> model(*random_checkpoint(config, 28));
    const Batch batch = pack(kSequences);
    LossOptions opts;
    if (config.is_moe()) {
      opts = upit_options(kSequences);
      opts.z_loss_coef = 0.01;
      opts.selection_bias.assign(size_t(config.num_hidden_layers), std::vector<float>(4, 0.0f));
      opts.selection_bias[1][2] = 0.3f;  // the layer computed again chooses as the forward did
    }
    Weights<float> kept = zeros_like(const_cast<Transformer<float>&>(model).weights(), config), again = kept;
    const LossReport a = model.loss_and_grad(batch, targets_of(kSequences), kept, opts);
    opts.recompute = true;
    const LossReport b = model.loss_and_grad(batch, targets_of(kSequences), again, opts);
    CHECK(a.ce_sum == b.ce_sum);
    CHECK(a.aux == b.aux);
    CHECK(a.router_bce == b.router_bce);
    CHECK(a.expert_tokens == b.expert_tokens);
    auto x = parameters(kept, config), y = parameters(again, config);
    for (size_t i = 0; i < x.size(); ++i) CHECK_MESSAGE(*x[i].values == *y[i].values, x[i].tensor.name);
  }
}

TEST_CASE("model backward: mixtral with the global (transformers') load-balancing loss") {
  LossOptions opts;
  opts.aux_loss = AuxLoss::Global;
  check_model_gradients(with(tiny_config("mixtral"), {{"router_aux_loss_coef", 0.1}}), 25, opts);
}

TEST_CASE("model backward: per-layer balancing is the mean of each layer's loss, global the loss of all rows") {
  // One MoE layer: the two are one number. Two: the mean of each layer's loss is not the loss of
  // the stacked rows (the values themselves: "load balancing loss: two layers collapsed ...").
  ModelConfig one = with(tiny_config("mixtral"), {{"router_aux_loss_coef", 0.1}});
  one.num_hidden_layers = 1;
  const ModelConfig two = with(one, {{"num_hidden_layers", 2}});
  LossOptions per_layer, global;
  global.aux_loss = AuxLoss::Global;
  const Batch batch = pack(kSequences);
  const std::vector<int32_t> targets = targets_of(kSequences);
  const Transformer<double> m1(*random_checkpoint(one, 26));
  CHECK(m1.loss(batch, targets, per_layer).aux == m1.loss(batch, targets, global).aux);
  const Transformer<double> m2(*random_checkpoint(two, 26));
  const double p = m2.loss(batch, targets, per_layer).aux, g = m2.loss(batch, targets, global).aux;
  CHECK(p > 0);
  CHECK(p != doctest::Approx(g).epsilon(1e-9));
}

TEST_CASE("model backward: mixtral with UpIT's router pre-optimisation loss, everything unfrozen") {
  check_model_gradients(with(tiny_config("mixtral"), {{"router_aux_loss_coef", 0.1}}), 29, upit_options(kSequences));
}

TEST_CASE("model backward: mixtral with UpIT's router pre-optimisation loss, only the router unfrozen") {
  check_model_gradients(with(tiny_config("mixtral"), {{"router_aux_loss_coef", 0.1}}), 30, upit_options(kSequences),
                        parse_parts("embeddings,attention,norms,experts"));
}

TEST_CASE("model backward: the router BCE's report, its scale and its argument checks") {
  const ModelConfig config = tiny_config("mixtral");
  Transformer<double> model(*random_checkpoint(config, 31));
  const Batch batch = pack(kSequences);
  const std::vector<int32_t> targets = targets_of(kSequences);
  const LossOptions opts = upit_options(kSequences);
  const LossReport plain = model.loss(batch, targets);
  const LossReport upit = model.loss(batch, targets, opts);
  CHECK(plain.router_bce == 0.0);
  CHECK(upit.router_bce > 0);
  // ce_coef scales the gradient only: the reported sum is the plain one.
  CHECK(upit.ce_sum == plain.ce_sum);
  CHECK(upit.tokens == plain.tokens);
  CHECK(upit.aux == plain.aux);
  Weights<double> grads = zeros_like(model.weights(), config);
  const LossReport with_grad = model.loss_and_grad(batch, targets, grads, opts);
  CHECK(with_grad.router_bce == upit.router_bce);
  CHECK(with_grad.ce_sum == plain.ce_sum);

  // Zero routers give zero logits in every layer, and each of the E terms of every counted
  // token costs softplus(0) = log 2: a mean over layers (not a sum) is coef · log 2.
  for (auto& layer : model.weights().layers) std::fill(layer.router.begin(), layer.router.end(), 0.0);
  CHECK(model.loss(batch, targets, opts).router_bce == doctest::Approx(0.5 * std::log(2.0)).epsilon(1e-14));

  // aux_scale scales the BCE's gradient like the other router losses'.
  LossOptions bce_only = opts;
  bce_only.ce_coef = 0;
  const ModelConfig no_aux = with(config, {{"router_aux_loss_coef", 0.0}});
  Transformer<double> m2(*random_checkpoint(no_aux, 32));
  const PartSet all_but_router = parse_parts("embeddings,attention,norms,experts");
  Weights<double> g1 = zeros_like(m2.weights(), no_aux, all_but_router);
  Weights<double> g4 = zeros_like(m2.weights(), no_aux, all_but_router);
  m2.loss_and_grad(batch, targets, g1, bce_only);
  bce_only.aux_scale = 0.25;
  m2.loss_and_grad(batch, targets, g4, bce_only);
  for (size_t l = 0; l < g1.layers.size(); ++l) {
    Vec quarter = g1.layers[l].router;
    for (double& v : quarter) v *= 0.25;
    check_gradient("router", g4.layers[l].router, quarter, 1e-14);
  }

  LossOptions bad = opts;
  bad.router_targets.pop_back();
  CHECK_THROWS_AS(model.loss(batch, targets, bad), std::invalid_argument);
  CHECK_THROWS_AS(model.loss_and_grad(batch, targets, grads, bad), std::invalid_argument);
  for (int32_t out_of_range : {-2, 4}) {
    bad = opts;
    bad.router_targets[3] = out_of_range;
    CHECK_THROWS_AS(model.loss(batch, targets, bad), std::invalid_argument);
    CHECK_THROWS_AS(model.loss_and_grad(batch, targets, grads, bad), std::invalid_argument);
  }
  const ModelConfig dense = tiny_config("llama");
  Transformer<double> llama(*random_checkpoint(dense, 33));
  Weights<double> dense_grads = zeros_like(llama.weights(), dense);
  CHECK_THROWS_AS(llama.loss(batch, targets, opts), std::invalid_argument);
  CHECK_THROWS_AS(llama.loss_and_grad(batch, targets, dense_grads, opts), std::invalid_argument);
}

TEST_CASE("model backward: frozen parts get no gradient and the rest stay exact") {
  check_model_gradients(tiny_config("mixtral"), 25, {}, parse_parts("attention,router,embeddings"));
  check_model_gradients(tiny_config("llama"), 26, {}, parse_parts("experts,norms"));
}

TEST_CASE("model backward: two micro-batches over the step's token count give the packed batch's gradient") {
  const ModelConfig config = tiny_config("llama");
  Transformer<double> model(*random_checkpoint(config, 27));
  Weights<double> whole = zeros_like(model.weights(), config), parts = zeros_like(model.weights(), config);
  const LossReport all = model.loss_and_grad(pack(kSequences), targets_of(kSequences), whole);
  LossOptions opts;
  opts.normaliser = all.tokens;
  for (const auto& s : kSequences) model.loss_and_grad(pack({s}), targets_of({s}), parts, opts);
  auto a = parameters(parts, config);
  auto b = parameters(whole, config);
  for (size_t i = 0; i < a.size(); ++i) check_gradient(a[i].tensor.name.c_str(), widen(*a[i].values), widen(*b[i].values), 1e-12);
}

TEST_CASE("model backward: the float model's gradients follow the double model's") {
  const ModelConfig config = tiny_config("mixtral");
  const auto ckpt = random_checkpoint(config, 28);
  Transformer<double> d(*ckpt);
  Transformer<float> f(*ckpt);
  Weights<double> gd = zeros_like(d.weights(), config);
  Weights<float> gf = zeros_like(f.weights(), config);
  const LossReport rd = d.loss_and_grad(pack(kSequences), targets_of(kSequences), gd);
  const LossReport rf = f.loss_and_grad(pack(kSequences), targets_of(kSequences), gf);
  CHECK(rf.ce() == doctest::Approx(rd.ce()).epsilon(1e-5));
  CHECK(rf.tokens == rd.tokens);
  REQUIRE(rf.expert_tokens.size() == 2);
  CHECK(rf.expert_tokens == rd.expert_tokens);
  auto a = parameters(gf, config);
  auto b = parameters(gd, config);
  for (size_t i = 0; i < a.size(); ++i) check_gradient(a[i].tensor.name.c_str(), widen(*a[i].values), *b[i].values, 1e-4);
}

TEST_CASE("model backward: the float model follows the double model under UpIT's pre-optimisation loss") {
  const ModelConfig config = tiny_config("mixtral");
  const auto ckpt = random_checkpoint(config, 34);
  Transformer<double> d(*ckpt);
  Transformer<float> f(*ckpt);
  Weights<double> gd = zeros_like(d.weights(), config);
  Weights<float> gf = zeros_like(f.weights(), config);
  const LossOptions opts = upit_options(kSequences);
  const LossReport rd = d.loss_and_grad(pack(kSequences), targets_of(kSequences), gd, opts);
  const LossReport rf = f.loss_and_grad(pack(kSequences), targets_of(kSequences), gf, opts);
  CHECK(rf.ce() == doctest::Approx(rd.ce()).epsilon(1e-5));
  CHECK(rd.router_bce > 0);
  CHECK(rf.router_bce == doctest::Approx(rd.router_bce).epsilon(1e-5));
  CHECK(rf.expert_tokens == rd.expert_tokens);
  auto a = parameters(gf, config);
  auto b = parameters(gd, config);
  for (size_t i = 0; i < a.size(); ++i) check_gradient(a[i].tensor.name.c_str(), widen(*a[i].values), *b[i].values, 1e-4);
}

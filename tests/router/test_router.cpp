// The router stage: seed data drawn from the training data, experts' own dense models, seed
// samples assigned by loss, and the routers' pre-optimisation.
#include <doctest/doctest.h>

#include <cmath>
#include <span>
#include <limits>

#include "router/assign.hpp"
#include "router/hidden_init.hpp"
#include "router/preopt.hpp"
#include "router/seed_data.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

// n samples over the 40-token vocabulary: the first 2 tokens a prompt, the rest counted.
TokenizedData samples(int n) {
  TokenizedData d;
  for (int i = 0; i < n; ++i) {
    TokenizedSample s;
    for (int t = 0; t < 6 + i % 4; ++t) {
      s.ids.push_back((i * 7 + t * (1 + i % 5)) % 40);
      s.labels.push_back(t < 2 ? kIgnoreLabel : s.ids.back());
    }
    s.line = i + 1;
    d.samples.push_back(s);
  }
  return d;
}

// The dense model of expert e, on the CPU.
Model dense_model(const Model& moe, int e) {
  EngineSpec s = router::expert_dense_model(moe.config(), moe.weights(), e);
  return Model(s.config, std::move(s.weights), s.source);
}

// The dense models of moe's experts on f32 CPU engines.
router::ExpertEngines expert_engines(const Model& moe) {
  return [&moe](int e) { return make_cpu_engine(router::expert_dense_model(moe.config(), moe.weights(), e)); };
}

double max_rel_diff(std::span<const float> a, std::span<const float> b) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::abs(a[i] - b[i]))), scale = std::max(scale, double(std::abs(b[i])));
  return worst / scale;
}

}  // namespace

TEST_CASE("router: seed data is a seeded share of the data, at least the minimum, all of small sets") {
  const TokenizedData d = samples(1000);
  const TokenizedData a = router::draw_seed_data(d, 0.01, 100, 3), b = router::draw_seed_data(d, 0.01, 100, 3);
  CHECK(a.samples.size() == 100);
  CHECK(router::draw_seed_data(d, 0.2, 100, 3).samples.size() == 200);
  for (size_t i = 0; i < a.samples.size(); ++i) CHECK(a.samples[i].line == b.samples[i].line);
  CHECK(router::draw_seed_data(d, 0.01, 100, 4).samples[0].line != a.samples[0].line);
  CHECK(router::draw_seed_data(samples(50), 0.01, 100, 3).samples.size() == 50);
}

TEST_CASE("router: an expert's dense model is the MoE's shared weights with that expert's FFN") {
  Model moe(*random_checkpoint(tiny_config("mixtral"), 5));
  // Every expert made a copy of expert 2: the MoE then computes expert 2's dense model.
  for (auto& l : moe.weights().layers)
    for (size_t e = 0; e < l.expert_gate.size(); ++e) {
      l.expert_gate[e] = l.expert_gate[2];
      l.expert_up[e] = l.expert_up[2];
      l.expert_down[e] = l.expert_down[2];
    }
  const Model dense = dense_model(moe, 2);
  CHECK(dense.config().model_type == "llama");
  CHECK_FALSE(dense.config().is_moe());
  const Batch b = pack({{1, 5, 9, 3, 30, 2}});
  CHECK(max_rel_diff(moe.forward(b), dense.forward(b)) < 1e-5);
  CHECK_THROWS_AS(router::expert_dense_model(moe.config(), moe.weights(), 4), std::invalid_argument);
  const Model other(*random_checkpoint(tiny_config("mixtral"), 5));  // experts as drawn: they differ
  CHECK(max_rel_diff(dense_model(other, 1).forward(b), dense_model(other, 2).forward(b)) > 1e-3);
}

TEST_CASE("router: each seed sample goes to the expert whose dense model has its lowest response loss") {
  const Model moe(*random_checkpoint(tiny_config("mixtral"), 6));
  const TokenizedData seed = samples(12);
  const router::Assignment a = router::assign_by_loss(4, expert_engines(moe), seed, 64, 40);
  REQUIRE(a.expert.size() == 12);
  int64_t total = 0;
  for (int64_t c : a.counts) total += c;
  CHECK(total == 12);
  for (int e = 0; e < 4; ++e) {
    const Model dense = dense_model(moe, e);
    for (size_t s = 0; s < seed.samples.size(); ++s) {
      const auto& smp = seed.samples[s];
      std::vector<int32_t> targets(smp.labels.begin() + 1, smp.labels.end());
      targets.push_back(kIgnoreLabel);
      CHECK(a.loss[s][size_t(e)] == doctest::Approx(dense.loss(pack({smp.ids}), targets).ce()).epsilon(1e-12));
    }
  }
  for (size_t s = 0; s < 12; ++s)
    CHECK(a.loss[s][size_t(a.expert[s])] == *std::min_element(a.loss[s].begin(), a.loss[s].end()));
}

TEST_CASE("router: pre-optimisation moves only the routers, toward each sample's expert") {
  const auto ckpt = random_checkpoint(tiny_config("mixtral"), 7);
  Model moe(*ckpt);
  // Expert e's samples use the tokens [10e, 10e + 10): a router can tell them apart.
  TokenizedData seed;
  std::vector<int32_t> assignment;
  for (int i = 0; i < 16; ++i) {
    TokenizedSample s;
    for (int t = 0; t < 8; ++t) s.ids.push_back(10 * (i % 4) + (i * 3 + t * 7) % 10);
    s.labels = s.ids;
    seed.samples.push_back(s);
    assignment.push_back(i % 4);
  }
  const auto before = moe.weights();
  router::PreoptOptions o;
  o.epochs = 30;
  o.lr = 3e-2;
  o.seq_len = 64;
  o.batch_tokens = 40;
  o.progress = false;
  const auto engine = make_cpu_engine({moe.config(), before, "<moe>", router::router_training()});
  const router::PreoptResult r = router::preoptimise_routers(*engine, seed, assignment, o);
  MESSAGE("BCE " << r.first_bce << " -> " << r.last_bce << ", LM loss " << r.first_ce << " -> " << r.last_ce);
  CHECK(r.steps > 30);
  CHECK(r.last_bce < 0.85 * r.first_bce);  // the routers learnt the samples' experts on their real inputs
  const auto& after = engine->host_weights();
  CHECK(after.embedding == before.embedding);
  for (size_t l = 0; l < after.layers.size(); ++l) {
    CHECK(after.layers[l].q == before.layers[l].q);
    CHECK(after.layers[l].expert_up == before.layers[l].expert_up);
    CHECK(after.layers[l].router != before.layers[l].router);
  }

  // The CPU's engine over the weights as stored (the router stage's) trains the same routers,
  // bit for bit in f32, and holds nothing else.
  const auto stored = make_cpu_stored_engine(moe.config(), load_stored_weights(*ckpt), "<moe>", router::router_training());
  const router::PreoptResult rs = router::preoptimise_routers(*stored, seed, assignment, o);
  CHECK(rs.steps == r.steps);
  CHECK(rs.last_bce == r.last_bce);
  const Weights<float>& routers = stored->host_weights();
  CHECK(routers.embedding.empty());
  for (size_t l = 0; l < after.layers.size(); ++l) {
    CHECK(routers.layers[l].q.empty());
    CHECK(routers.layers[l].router == after.layers[l].router);
  }
}

TEST_CASE("router: the hidden init is the unit-length mean router input of each expert's samples") {
  const Model moe(*random_checkpoint(tiny_config("mixtral"), 8));
  const TokenizedData seed = samples(6);
  const std::vector<int32_t> assignment = {0, 1, 0, 1, 1, 3};  // expert 2 has none: the mean of all
  const auto routers = router::hidden_state_routers(moe.config(), expert_engines(moe), seed, assignment, 64, 20);
  REQUIRE(routers.size() == 2);
  const int64_t H = 16;
  for (int e = 0; e < 4; ++e) {
    const Model dense = dense_model(moe, e);
    for (size_t l = 0; l < 2; ++l) {
      std::vector<double> mean(H, 0.0);
      for (size_t s = 0; s < seed.samples.size(); ++s) {
        if (e != 2 && assignment[s] != e) continue;
        const auto in = dense.ffn_inputs(pack({seed.samples[s].ids}))[l];
        for (size_t i = 0; i < in.size(); ++i) mean[i % H] += in[i];
      }
      double norm = 0;
      for (double v : mean) norm += v * v;
      for (int64_t h = 0; h < H; ++h)
        CHECK(routers[l][size_t(e * H + h)] == doctest::Approx(mean[size_t(h)] / std::sqrt(norm)).epsilon(1e-5));
    }
  }
  CHECK(routers[0][0] != routers[0][size_t(H)]);  // experts 0 and 1 differ
}

TEST_CASE("router: the losses by expert transpose the assignment's, the random assignment is seeded") {
  router::Assignment a;
  a.loss = {{1.0, 1.5, 3.0}, {2.0, 1.0, 2.0}};
  a.expert = {0, 1};
  a.counts = {1, 1, 0};
  CHECK(router::losses_by_expert(a) == std::vector<std::vector<double>>{{1.0, 2.0}, {1.5, 1.0}, {3.0, 2.0}});

  router::Assignment b = a, c = a;
  b.expert.assign(300, 0);
  c.expert.assign(300, 0);
  router::assign_at_random(b, 7);
  router::assign_at_random(c, 7);
  CHECK(b.expert == c.expert);
  int64_t total = 0;
  for (int64_t n : b.counts) {
    CHECK(n > 60);  // about 100 each of 300
    total += n;
  }
  CHECK(total == 300);
  router::assign_at_random(c, 8);
  CHECK(b.expert != c.expert);
}

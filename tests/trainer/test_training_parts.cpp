// The training loop's parts: the learning-rate schedule, the batch sampler (whole samples,
// shifted targets, a seeded order per epoch, a cursor that resumes without replaying) and the
// optimizer state's round trip.
#include <doctest/doctest.h>

#include <cmath>

#include "core/error.hpp"
#include "tests/common/fixtures.hpp"
#include "trainer/batches.hpp"
#include "trainer/collapse_watch.hpp"
#include "trainer/optimizer.hpp"
#include "trainer/schedule.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

TokenizedData samples(int n) {
  TokenizedData d;
  for (int i = 0; i < n; ++i) {
    TokenizedSample s;
    for (int t = 0; t < 3 + i % 4; ++t) s.ids.push_back(i * 10 + t);
    s.labels = s.ids;
    s.labels[0] = kIgnoreLabel;
    s.line = i + 1;
    d.samples.push_back(s);
  }
  return d;
}

}  // namespace

TEST_CASE("schedule: warmup, then cosine or linear down to the floor, or constant") {
  LrSchedule s{LrSchedule::Kind::Cosine, 1.0, 4, 14, 0.1};
  CHECK(s.at(1) == doctest::Approx(0.25));
  CHECK(s.at(4) == doctest::Approx(1.0));
  CHECK(s.at(9) == doctest::Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 0.5))));
  CHECK(s.at(14) == doctest::Approx(0.1));
  s.kind = LrSchedule::Kind::Linear;
  CHECK(s.at(9) == doctest::Approx(0.1 + 0.9 * 0.5));
  s.kind = LrSchedule::Kind::Constant;
  CHECK(s.at(14) == doctest::Approx(1.0));
  CHECK_THROWS_AS(parse_schedule("step"), UsageError);
}

TEST_CASE("batches: whole samples up to the token budget, targets shifted by one, cut to seq_len") {
  const TokenizedData data = samples(10);
  BatchSampler sampler(data, 5, 12, 3);
  int64_t seen = 0;
  while (sampler.cursor().epoch == 0 && seen < 10) {
    const MicroBatch mb = sampler.next();
    const auto& cu = mb.batch.cu_seqlens;
    CHECK((cu.back() <= 12 || cu.size() == 2));
    for (size_t s = 0; s + 1 < cu.size(); ++s) {
      const int32_t first = mb.batch.ids[size_t(cu[s])], len = cu[s + 1] - cu[s];
      const TokenizedSample& sample = data.samples[size_t(first / 10)];
      CHECK(len == std::min<int32_t>(5, int32_t(sample.ids.size())));
      for (int32_t t = 0; t < len; ++t) {
        CHECK(mb.batch.positions[size_t(cu[s] + t)] == t);
        const int32_t want = t + 1 < len ? sample.labels[size_t(t + 1)] : kIgnoreLabel;
        CHECK(mb.targets[size_t(cu[s] + t)] == want);
      }
      ++seen;
    }
  }
  CHECK(seen == 10);  // each sample once per epoch
}

TEST_CASE("batches: a seeded order that changes per epoch, and a cursor that resumes it") {
  const TokenizedData data = samples(16);
  BatchSampler a(data, 8, 10, 7), b(data, 8, 10, 7), other(data, 8, 10, 8);
  std::vector<int32_t> first_epoch, second_epoch;
  DataCursor mid;
  for (int i = 0; i < 40; ++i) {
    if (i == 13) mid = a.cursor();
    const MicroBatch mb = a.next();
    (a.cursor().epoch == 0 ? first_epoch : second_epoch).push_back(mb.batch.ids[0]);
    CHECK(mb.batch.ids == b.next().batch.ids);
  }
  CHECK(first_epoch != std::vector<int32_t>(second_epoch.begin(), second_epoch.begin() + long(first_epoch.size())));
  CHECK(other.next().batch.ids != BatchSampler(data, 8, 10, 7).next().batch.ids);
  // Seeking to the cursor before batch 13 gives batches 13.. again.
  BatchSampler replay(data, 8, 10, 7), resumed(data, 8, 10, 7);
  for (int i = 0; i < 13; ++i) replay.next();
  resumed.seek(mid);
  for (int i = 0; i < 20; ++i) CHECK(replay.next().batch.ids == resumed.next().batch.ids);
}

TEST_CASE("optimizer: the state saved and loaded continues the same updates") {
  ScratchDir dir;
  const ModelConfig config = tiny_config("mixtral");
  const auto ckpt = random_checkpoint(config, 3);
  Weights<float> w1 = load_weights<float>(*ckpt), w2 = load_weights<float>(*ckpt);
  Weights<float> g = zeros_like(w1, config, parse_parts("router"));
  for (auto& p : parameters(g, config))
    for (size_t i = 0; i < p.values->size(); ++i) (*p.values)[i] = float(i % 7) - 3.0f;
  ops::AdamWConfig hyper;
  hyper.weight_decay = 0.1;
  AdamW a(trained_tensors(w1, g, config), hyper), b(trained_tensors(w2, g, config), hyper);
  a.step(1e-3);
  b.step(1e-3);
  a.save(dir / "opt.safetensors");
  AdamW c(trained_tensors(w2, g, config), hyper);
  c.load(dir / "opt.safetensors");
  CHECK(c.steps() == 1);
  a.step(1e-3);
  c.step(1e-3);
  auto p1 = parameters(w1, config), p2 = parameters(w2, config);
  for (size_t i = 0; i < p1.size(); ++i) CHECK_MESSAGE(*p1[i].values == *p2[i].values, p1[i].tensor.name);
  CHECK(g.layers[0].router.empty());  // frozen: no gradient, no moments
  Weights<float> all = zeros_like(w2, config);
  AdamW unfrozen(trained_tensors(w2, all, config), hyper);
  CHECK_THROWS_AS(unfrozen.load(dir / "opt.safetensors"), InputError);  // no router moments there
  // zero_grads clears every trained gradient.
  a.zero_grads();
  for (auto& p : parameters(g, config))
    for (float x : *p.values) REQUIRE(x == 0.0f);
}

TEST_CASE("collapse watch: a layer's idlest expert under a tenth of an even share for 50 steps is told, once") {
  CollapseWatch w;
  const std::vector<std::vector<int64_t>> balanced = {{25, 25, 25, 25}, {30, 20, 25, 25}};
  const std::vector<std::vector<int64_t>> collapsed = {{25, 25, 25, 25}, {60, 38, 2, 0}};  // layer 1: 0 of an even 25
  for (int64_t s = 1; s <= 49; ++s) CHECK_FALSE(w.observe(s, collapsed));
  CHECK_FALSE(w.observe(50, balanced));  // a balanced step restarts the count
  for (int64_t s = 51; s <= 99; ++s) CHECK_FALSE(w.observe(s, collapsed));
  CHECK(w.observe(100, collapsed));  // the 50th step in a row
  CHECK_FALSE(w.observe(101, collapsed));  // once per run
  CollapseWatch edge;
  const std::vector<std::vector<int64_t>> at_tenth = {{10, 100, 100, 190}};  // exactly 0.1 of an even 100: not under
  for (int64_t s = 1; s <= 60; ++s) CHECK_FALSE(edge.observe(s, at_tenth));
}

// Training over weights as stored (make_cpu_stored_engine, what tune --freeze and --precision
// bf16 run on the CPU): with frozen parts, on f32 checkpoints the f32 engine's losses, gradient
// norms and weights bit for bit, on a bf16 checkpoint the frozen matrices stay bf16 and are
// written back byte for byte; in bf16, the f32 engine's losses to bf16's rounding, the same bits
// on every run.
#include <doctest/doctest.h>

#include <cstring>

#include "tests/common/fixtures.hpp"
#include "trainer/engine.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TrainSetup frozen(const std::string& parts) {
  TrainSetup s;
  s.adam.weight_decay = 0.01;
  s.frozen = parse_parts(parts);
  return s;
}

struct Step {
  double loss, norm;
};

// Two AdamW steps over two batches, with the router's z-loss so that every part has a gradient.
std::vector<Step> two_steps(Engine& e) {
  const std::vector<std::vector<int32_t>> ids = {{1, 7, 5, 3, 6, 2, 4, 7, 0, 5}, {3, 3, 9, 1, 0, 8, 2}};
  std::vector<Step> out;
  LossOptions opts;
  opts.z_loss_coef = 0.01;
  for (const auto& s : ids) {
    std::vector<int32_t> targets(s.begin() + 1, s.end());
    targets.push_back(ops::kIgnoreIndex);
    e.zero_grads();
    const double loss = e.accumulate(pack({s}), targets, opts).ce_sum;
    out.push_back({loss, e.clip(0.5)});
    e.step(1e-2);
  }
  return out;
}

// f(checkpoint, setup) for a dense qwen2 and a mixtral, each with nothing frozen and with frozen
// attention, the case named on failure.
template <class F>
void for_each_model_and_parts(uint64_t seed, F f) {
  for (const char* type : {"qwen2", "mixtral"})
    for (const char* parts : {"", "attention"}) {
      CAPTURE(type);
      CAPTURE(parts);
      const bool moe = std::string(type) == "mixtral";
      f(*random_checkpoint(tiny_config(type, !moe), seed), frozen(parts));
    }
}

}  // namespace

TEST_CASE("stored training: over weights as stored, the f32 engine's bits on f32 checkpoints") {
  for (const char* type : {"qwen2", "mixtral"})
    for (const char* parts : {"attention,embeddings", "experts,norms", "router,attention", "embeddings"}) {
      CAPTURE(type);
      CAPTURE(parts);
      const bool moe = std::string(type) == "mixtral";
      if (!moe && std::string(parts) == "router,attention") continue;
      const auto ckpt = random_checkpoint(tiny_config(type, !moe), 21);  // qwen2: biases, tied head
      const TrainSetup setup = frozen(parts);
      const auto want = make_cpu_engine({ckpt->config(), load_weights<float>(*ckpt), "<f32>", setup});
      const auto got = load_training_engine(*ckpt, ckpt->config(), make_cpu_engine, setup);
      const auto a = two_steps(*want), b = two_steps(*got);
      for (size_t i = 0; i < a.size(); ++i) {
        CHECK(b[i].loss == a[i].loss);
        CHECK(b[i].norm == a[i].norm);
      }
      // The masters alone (frozen tensors empty), and the whole model written back.
      auto masters = parameters(got->host_weights(), got->config());
      auto all = parameters(want->host_weights(), want->config());
      const auto written = got->checkpoint(nullptr);
      for (size_t i = 0; i < all.size(); ++i) {
        CAPTURE(all[i].tensor.name);
        const bool is_frozen = setup.frozen[size_t(role_info(all[i].tensor.id.role).part)];
        CHECK(masters[i].values->empty() == is_frozen);
        if (!is_frozen) CHECK(same_bits(*masters[i].values, *all[i].values));
        CHECK(same_bits(written->load(all[i].tensor.name).to_f32_vector(), *all[i].values));
      }
    }
}

TEST_CASE("stored training: a bf16 model's frozen matrices stay bf16 and are written back byte for byte") {
  const auto ckpt = random_checkpoint(tiny_config("mixtral"), 22, DType::BF16);
  const TrainSetup setup = frozen("attention,embeddings,norms");
  const auto engine = load_training_engine(*ckpt, ckpt->config(), make_cpu_engine, setup);
  const auto reference = make_cpu_engine({ckpt->config(), load_weights<float>(*ckpt), "<f32>", setup});
  const auto got = two_steps(*engine), want = two_steps(*reference);
  for (size_t i = 0; i < got.size(); ++i)  // the frozen products widen bf16 a panel at a time
    CHECK(got[i].loss == doctest::Approx(want[i].loss).epsilon(1e-5));
  const auto written = engine->checkpoint(ckpt.get());
  for (const TensorInfo& t : written->tensors()) {
    CAPTURE(t.name);
    const Role role = parse_tensor_name(t.name, Scheme::HF)->role;
    if (setup.frozen[size_t(role_info(role).part)] && t.shape.size() == 2) {
      CHECK(t.dtype == DType::BF16);
      CHECK(same_tensor(written->load(t.name), ckpt->load(t.name)));
    } else if (setup.frozen[size_t(role_info(role).part)]) {  // vectors are held in f32, the same values
      CHECK(same_bits(written->load(t.name).to_f32_vector(), ckpt->load(t.name).to_f32_vector()));
    } else {
      CHECK(t.dtype == DType::F32);  // a trained master
      CHECK(!same_bits(written->load(t.name).to_f32_vector(), ckpt->load(t.name).to_f32_vector()));
    }
  }
}

TEST_CASE("stored training: bf16 products follow the f32 engine's losses, the same bits on every run") {
  for_each_model_and_parts(23, [](const Checkpoint& ckpt, const TrainSetup& setup) {
    const auto f32 = make_cpu_engine({ckpt.config(), load_weights<float>(ckpt), "<f32>", setup});
    auto bf16 = [&] { return load_training_engine(ckpt, ckpt.config(), make_cpu_engine, setup, Precision::BF16); };
    const auto a = bf16(), b = bf16();
    const auto want = two_steps(*f32), got = two_steps(*a), again = two_steps(*b);
    for (size_t i = 0; i < want.size(); ++i) {
      CHECK(got[i].loss != want[i].loss);  // rounded to bf16
      CHECK(got[i].loss == doctest::Approx(want[i].loss).epsilon(1e-2));
      CHECK(got[i].norm == doctest::Approx(want[i].norm).epsilon(5e-2));
      CHECK(again[i].loss == got[i].loss);
      CHECK(again[i].norm == got[i].norm);
    }
    auto ma = parameters(a->host_weights(), a->config()), mb = parameters(b->host_weights(), b->config());
    for (size_t i = 0; i < ma.size(); ++i) CHECK(same_bits(*ma[i].values, *mb[i].values));
  });
}

TEST_CASE("stored training: bf16 products read the masters as AdamW last rounded them") {
  for_each_model_and_parts(24, [](const Checkpoint& ckpt, const TrainSetup& setup) {
    const auto trained = load_training_engine(ckpt, ckpt.config(), make_cpu_engine, setup, Precision::BF16);
    two_steps(*trained);
    // A new engine rounds the stepped masters itself: the same products, if AdamW's copies kept up.
    const auto stepped = trained->checkpoint(&ckpt);
    const auto fresh = load_training_engine(*stepped, ckpt.config(), make_cpu_engine, setup, Precision::BF16);
    const std::vector<int32_t> s = {2, 9, 4, 4, 1, 6, 3, 8, 0};
    std::vector<int32_t> targets(s.begin() + 1, s.end());
    targets.push_back(ops::kIgnoreIndex);
    const double got = trained->loss(pack({s}), targets, {}).ce_sum, want = fresh->loss(pack({s}), targets, {}).ce_sum;
    CHECK(got == want);
  });
}

// The model over weights in their stored dtype (what forward, eval and generate run on the CPU):
// the f32 model's bits on f32 checkpoints, its logits within each dtype's rounding on bf16, f16
// and Q8_0 ones (the same greedy tokens), matrices never widened, and the inputs' gradients
// through frozen stored weights (the router stage's) against the f32 model's.
#include <doctest/doctest.h>

#include <cmath>
#include <span>
#include <cstring>
#include <numeric>

#include "core/error.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/gguf_model.hpp"
#include "formats/open_checkpoint.hpp"
#include "tests/common/fixtures.hpp"
#include "tests/common/gguf_writer.hpp"
#include "trainer/engine.hpp"
#include "trainer/model.hpp"
#include "trainer/stored_model.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

const std::vector<int32_t> kIds = {1, 7, 5, 3, 6, 2, 4, 7, 0, 5};  // ids < 8, every test vocabulary's

// A config with rows of whole Q8_0 blocks (hidden 64, FFN 96), `type` llama, qwen2 or mixtral.
ModelConfig block_config(const std::string& type) {
  nlohmann::ordered_json j = tiny_config(type).to_json();
  j["hidden_size"] = 64;
  j["intermediate_size"] = 96;
  j["vocab_size"] = 8;
  return ModelConfig::from_json(j, "<block_config>");
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double max_relative_error(std::span<const float> got, std::span<const float> want) {
  double worst = 0, scale = 0;
  for (float x : want) scale = std::max(scale, double(std::fabs(x)));
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - want[i]) / scale);
  return worst;
}

// The logits after each token fed to the decoder one at a time.
std::vector<std::vector<float>> decode_each(TokenDecoder& d, const std::vector<int32_t>& ids) {
  std::vector<std::vector<float>> out;
  for (int32_t id : ids) out.push_back(d.append(std::span<const int32_t>(&id, 1)));
  return out;
}

int64_t argmax(const std::vector<float>& v) { return std::max_element(v.begin(), v.end()) - v.begin(); }

std::vector<int32_t> next_tokens(const std::vector<int32_t>& ids) {
  std::vector<int32_t> t(ids.begin() + 1, ids.end());
  t.push_back(ops::kIgnoreIndex);
  return t;
}

// The stored model against the f32 model on the same checkpoint (whose values it widens): logits
// of a whole batch (the widened panels), of decoding (the dot products) with the same greedy
// tokens, and the loss.
void check_close(const Checkpoint& ckpt, double tolerance) {
  const Model f32(ckpt);
  const StoredModel stored(ckpt);
  const Batch batch = pack({kIds});
  CHECK(max_relative_error(stored.forward(batch), f32.forward(batch)) < tolerance);
  const double want = f32.loss(batch, next_tokens(kIds)).ce(), got = stored.loss(batch, next_tokens(kIds)).ce();
  CHECK(std::fabs(got - want) < tolerance * want);
  Decoder d32(f32, 16);
  StoredDecoder ds(stored, 16);
  const auto a = decode_each(d32, kIds), b = decode_each(ds, kIds);
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(max_relative_error(b[i], a[i]) < tolerance);
    CHECK(argmax(b[i]) == argmax(a[i]));
  }
}

}  // namespace

TEST_CASE("stored model: f32 checkpoints give the f32 model's bits (forward, loss, decoding)") {
  for (const std::string type : {"qwen2", "qwen3", "mixtral", "qwen2_moe"}) {
    CAPTURE(type);
    const auto ckpt = random_checkpoint(tiny_config(type, type.starts_with("qwen2")), 11);
    const Model f32(*ckpt);
    const StoredModel stored(*ckpt);
    const Batch batch = pack({kIds});
    CHECK(same_bits(stored.forward(batch), f32.forward(batch)));
    std::vector<int32_t> targets(kIds.begin() + 1, kIds.end());
    targets.push_back(ops::kIgnoreIndex);
    CHECK(stored.loss(batch, targets).ce_sum == f32.loss(batch, targets).ce_sum);
    Decoder want(f32, 16);
    StoredDecoder got(stored, 16);
    const auto a = decode_each(want, kIds), b = decode_each(got, kIds);
    for (size_t i = 0; i < a.size(); ++i) CHECK(same_bits(b[i], a[i]));
  }
}

TEST_CASE("stored model: bf16 and f16 checkpoints are used as stored and compute the f32 model's logits") {
  for (DType t : {DType::BF16, DType::F16})
    for (Scheme scheme : {Scheme::HF, Scheme::HFFused}) {
      CAPTURE(dtype_name(t));
      CAPTURE(int(scheme));
      const auto ckpt = random_checkpoint(block_config("mixtral"), 12, t, scheme);
      const StoredModel stored(*ckpt);
      const auto& layer = stored.weights().layers[1];
      CHECK(layer.q.dtype() == t);  // not widened
      CHECK(layer.expert_down[3].dtype() == t);
      CHECK(layer.router.dtype() == DType::F32);
      CHECK(layer.attn_norm.dtype() == DType::F32);
      check_close(*ckpt, 1e-5);
    }
  check_close(*random_checkpoint(block_config("qwen2"), 13, DType::BF16), 1e-5);
}

TEST_CASE("stored model: a quantized GGUF stays quantized and computes the f32 model's logits on its values") {
  ScratchDir dir;
  for (auto [type, dtype] : {std::pair{ggml::Q8_0, DType::Q8_0}, {ggml::Q4_1, DType::Q4_1}})
    for (const char* arch : {"llama", "qwen2"}) {
      CAPTURE(arch);
      CAPTURE(dtype_name(dtype));
      const auto path = dir / (std::string(arch) + ".gguf");
      write_gguf_model(*random_checkpoint(block_config(arch), 14), path, {arch, type});
      const auto ckpt = open_gguf(path);
      const StoredModel stored(*ckpt);
      CHECK(stored.weights().layers[0].q.dtype() == dtype);  // llama's q rows un-interleaved, still quantized
      CHECK(stored.weights().embedding.dtype() == dtype);
      check_close(*ckpt, 1e-5);
    }
}

TEST_CASE("stored model: the router's gradients through frozen stored weights are the f32 model's") {
  for (DType t : {DType::F32, DType::BF16}) {
    CAPTURE(dtype_name(t));
    const auto ckpt = random_checkpoint(block_config("mixtral"), 15, t);
    const Model f32(*ckpt);
    const StoredModel stored(*ckpt);
    auto router_grads = [&] {
      Weights<float> g;
      parameters(g, ckpt->config());
      for (auto& l : g.layers) l.router.assign(size_t(4 * 64), 0.0f);
      return g;
    };
    Weights<float> want = router_grads(), got = router_grads();
    const Batch batch = pack({kIds});
    LossOptions opts;
    opts.z_loss_coef = 0.01;
    f32.loss_and_grad(batch, next_tokens(kIds), want, opts);
    stored.loss_and_grad(batch, next_tokens(kIds), got, opts);
    for (size_t l = 0; l < want.layers.size(); ++l) {
      if (t == DType::F32) CHECK(same_bits(got.layers[l].router, want.layers[l].router));
      else CHECK(max_relative_error(got.layers[l].router, want.layers[l].router) < 1e-4);
    }
    got.layers[0].q.assign(size_t(64 * 64), 0.0f);
    CHECK_THROWS_AS(stored.loss_and_grad(batch, next_tokens(kIds), got, opts), std::logic_error);
  }
}

TEST_CASE("stored model: streamed layers (the router stage's) compute the same bits, forward and backward") {
  ScratchDir dir;
  WriteOptions w;
  w.progress = false;
  write_checkpoint(*random_checkpoint(block_config("mixtral"), 17, DType::BF16, Scheme::HFFused), dir / "moe", w);
  const auto ckpt = open_checkpoint(dir / "moe");  // mapped: streaming drops its pages after each use
  const StoredModel resident(*ckpt);
  const StoredModel streamed(ckpt->config(), load_streamed_weights(*ckpt, Precision::F32), ckpt->path());
  const Batch batch = pack({kIds});
  for (int pass = 0; pass < 2; ++pass) {  // the second reads the dropped pages back
    CHECK(same_bits(streamed.forward(batch), resident.forward(batch)));
    Weights<float> want, got;
    parameters(want, ckpt->config());
    for (auto& l : want.layers) l.router.assign(size_t(4 * 64), 0.0f);
    got = want;
    resident.loss_and_grad(batch, next_tokens(kIds), want);
    streamed.loss_and_grad(batch, next_tokens(kIds), got);
    for (size_t l = 0; l < want.layers.size(); ++l) CHECK(same_bits(got.layers[l].router, want.layers[l].router));
  }
}

TEST_CASE("stored model: the CPU's inference engine runs it, and refuses to train") {
  const auto ckpt = random_checkpoint(block_config("mixtral"), 16, DType::BF16);
  const auto engine = load_engine(*ckpt);
  const Batch batch = pack({kIds});
  CHECK(same_bits(engine->forward(batch), StoredModel(*ckpt).forward(batch)));
  CHECK_THROWS_AS(engine->accumulate(batch, next_tokens(kIds), {}), std::logic_error);
  CHECK_THROWS_AS(engine->host_weights(), std::logic_error);
  TrainSetup setup;
  CHECK_NOTHROW(load_engine(*ckpt, make_cpu_engine, setup)->zero_grads());  // training: the f32 engine
}

TEST_CASE("stored model: bf16 precision multiplies bf16 copies and follows the f32 logits") {
  const auto moe = random_checkpoint(block_config("mixtral"), 17);  // f32: converted when loaded
  const StoredWeights w = load_stored_weights(*moe, Precision::BF16);
  CHECK(w.layers[0].q.dtype() == DType::BF16);
  CHECK(w.layers[0].q.matrix().bf16_products);
  CHECK(w.layers[0].expert_up[2].matrix().bf16_products);
  CHECK(w.layers[0].router.dtype() == DType::F32);
  CHECK_FALSE(load_stored_weights(*moe).layers[0].q.matrix().bf16_products);

  // Dense: an MoE's top-k may flip on a rounding, which moves its logits by more than rounding.
  const auto ckpt = random_checkpoint(block_config("qwen2"), 17);
  const StoredModel bf16(ckpt->config(), load_stored_weights(*ckpt, Precision::BF16), ckpt->path());
  const Model f32(*ckpt);
  const Batch batch = pack({kIds});  // more than kDotRows rows: oneDNN's bf16 product
  const auto got = bf16.forward(batch), want = f32.forward(batch);
  const double error = max_relative_error(got, want);
  CHECK(error > 0);  // rounded to bf16: not the f32 bits
  CHECK(error < 2e-2);
  const int64_t V = ckpt->config().vocab_size;
  for (int64_t n = 0; n < int64_t(kIds.size()); ++n) {
    CAPTURE(n);
    const std::vector<float> a(got.begin() + n * V, got.begin() + (n + 1) * V), b(want.begin() + n * V, want.begin() + (n + 1) * V);
    CHECK(argmax(a) == argmax(b));
  }
  CHECK_THROWS_AS(parse_precision("fp8"), UsageError);
}

TEST_CASE("stored model: SmolLM2-135M-Instruct in bf16 gives f32's greedy text and logits within 5%") {
  const auto gguf = smollm2_gguf();
  if (!gguf) {
    MESSAGE("skipped: SmolLM2 GGUF not fetched (scripts/fetch-smollm2.sh)");
    return;
  }
  const auto ckpt = open_checkpoint(*gguf);
  const auto f32 = load_engine(*ckpt), bf16 = load_engine(*ckpt, make_cpu_engine, {}, Precision::BF16);
  // "The capital of France is" in SmolLM2's vocabulary, then greedy continuation.
  const std::vector<int32_t> prompt = {504, 3575, 282, 4649, 314};
  const Batch batch = pack({prompt});
  CHECK(max_relative_error(bf16->forward(batch), f32->forward(batch)) < 5e-2);
  auto greedy = [&](Engine& e) {
    const auto d = e.decoder(32);
    std::vector<float> logits = d->append(prompt);
    std::vector<int32_t> out;
    for (int i = 0; i < 16; ++i) {
      out.push_back(int32_t(argmax(logits)));
      logits = d->append(std::span<const int32_t>(&out.back(), 1));
    }
    return out;
  };
  CHECK(greedy(*bf16) == greedy(*f32));
}

// `upcycle tune` end to end on tiny models: the loss falls, a stopped and resumed run equals a
// straight one byte for byte, a NaN stops the run leaving earlier checkpoints intact, frozen
// parts stay fixed, bad data and misuse are named.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "formats/checkpoint_writer.hpp"
#include "formats/open_checkpoint.hpp"
#include "formats/safetensors.hpp"
#include "tests/common/fixtures.hpp"
#include "trainer/model.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

// A model folder dir/type with the tiny config of `type`, random weights.
fs::path tiny_model(const ScratchDir& dir, const std::string& type, uint64_t seed, DType dtype = DType::F32) {
  return write_model(dir, type, tiny_config(type), seed, dtype);
}

fs::path sequences(const ScratchDir& dir, int n, const std::string& name = "data.jsonl") {
  return write_sequences(dir / name, n);
}

// `upcycle tune` of a tiny llama (weights from `seed`) on 4 sequences into dir/run.
RunResult tune_tiny(const ScratchDir& dir, uint64_t seed, const std::string& options) {
  const fs::path model = tiny_model(dir, "llama", seed), data = sequences(dir, 4);
  return run_upcycle("tune --model " + q(model) + " --data " + q(data) + " --out " + q(dir / "run") + " " + options);
}

}  // namespace

TEST_CASE("tune: a small model overfits a few sequences") {
  ScratchDir dir;
  const auto r = tune_tiny(dir, 1, "--steps 150 --lr 1e-2 --warmup 5 --batch-tokens 64 --log-every 50");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto l = read_losses(dir / "run" / "metrics.jsonl");
  REQUIRE(l.size() == 150);
  MESSAGE("loss " << l.front() << " -> " << l.back());
  CHECK(l.back() < 0.1 * l.front());
  CHECK(l.back() < 0.3);
  // The final checkpoint is a model every command reads.
  CHECK(open_checkpoint(dir / "run" / "final")->config().model_type == "llama");
}

TEST_CASE("tune: --save-count N writes N checkpoints evenly over the run, also where N does not divide the steps") {
  ScratchDir dir;
  // 20 steps, 8 checkpoints: at ceil(2.5 i). A fixed interval of ceil(20 / 8) = 3 wrote 7.
  const auto r = tune_tiny(dir, 2, "--steps 20 --save-count 8 --batch-tokens 64 --log-every 20");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  std::vector<std::string> saved;
  for (const auto& e : fs::directory_iterator(dir / "run"))
    if (fs::is_directory(e.path())) saved.push_back(e.path().filename().string());
  std::sort(saved.begin(), saved.end());
  CHECK(saved == std::vector<std::string>{"final", "step-000003", "step-000005", "step-000008", "step-000010",
                                          "step-000013", "step-000015", "step-000018"});
}

TEST_CASE("tune: N steps, stop, resume, N more equals 2N straight, byte for byte (MoE: f32, frozen parts, bf16)") {
  // The engine over weights as stored runs the last two (frozen parts as stored; bf16 products).
  for (const char* engine : {"", " --freeze attention,norms", " --precision bf16"}) {
    CAPTURE(engine);
    ScratchDir dir;
    const fs::path model = tiny_model(dir, "mixtral", 2), data = sequences(dir, 24);
    const std::string common = " --data " + q(data) +
                               " --steps 12 --lr 3e-3 --warmup 3 --batch-tokens 40 --grad-accum 2 --clip 0.5"
                               " --weight-decay 0.1 --z-loss-coef 0.001 --seed 9 --log-every 100" + engine;
    REQUIRE(run_upcycle("tune --model " + q(model) + " --out " + q(dir / "a") + common).code == 0);
    REQUIRE(run_upcycle("tune --model " + q(model) + " --out " + q(dir / "b") + common + " --stop-at 6").code == 0);
    CHECK(!fs::exists(dir / "b" / "final"));
    const auto r = run_upcycle("tune --resume " + q(dir / "b" / "step-000006") + " --out " + q(dir / "b") + common);
    REQUIRE_MESSAGE(r.code == 0, r.err);
    for (const char* file : {"model.safetensors", "optimizer.safetensors"})
      CHECK_MESSAGE(read_file(dir / "a" / "final" / file) == read_file(dir / "b" / "final" / file), file);
    CHECK(read_losses(dir / "a" / "metrics.jsonl") == read_losses(dir / "b" / "metrics.jsonl"));
    // The older checkpoint gave its optimizer state up to the newer one.
    CHECK(!fs::exists(dir / "b" / "step-000006" / "optimizer.safetensors"));
    CHECK(fs::exists(dir / "b" / "step-000006" / "model.safetensors"));
  }
}

TEST_CASE("tune: an MoE's metrics carry each layer's expert shares, idlest and busiest against even, router entropy") {
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "mixtral", 2), data = sequences(dir, 24);
  const auto r = run_upcycle("tune --model " + q(model) + " --out " + q(dir / "a") + " --data " + q(data) +
                             " --steps 4 --batch-tokens 40 --log-every 1");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("idlest ") != std::string::npos);
  std::stringstream in(read_file(dir / "a" / "metrics.jsonl"));
  int steps = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("expert_load")) continue;
    ++steps;
    const auto& load = j["expert_load"];
    REQUIRE(load.size() == j["load_idlest"].size());
    REQUIRE(load.size() == j["router_entropy"].size());
    for (size_t l = 0; l < load.size(); ++l) {
      const std::vector<double> shares = load[l].get<std::vector<double>>();
      const double E = double(shares.size());
      double sum = 0;
      for (double x : shares) sum += x;
      CHECK(sum == doctest::Approx(1.0));
      CHECK(j["load_idlest"][l].get<double>() == doctest::Approx(E * *std::min_element(shares.begin(), shares.end())));
      CHECK(j["load_busiest"][l].get<double>() == doctest::Approx(E * *std::max_element(shares.begin(), shares.end())));
      const double entropy = j["router_entropy"][l];
      CHECK(entropy > 0);  // a softmax router over 2 experts is never certain
      CHECK(entropy <= std::log(E) + 1e-9);
    }
  }
  CHECK(steps == 4);
}

TEST_CASE("tune: --balance bias drops the balancing loss, keeps its bias in the metrics and resumes exactly") {
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "mixtral", 2), data = sequences(dir, 24);
  const std::string common = " --data " + q(data) + " --steps 8 --lr 3e-3 --batch-tokens 40 --seed 4 --balance bias --bias-rate 0.01";
  auto r = run_upcycle("tune --model " + q(model) + " --out " + q(dir / "a") + common);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  std::stringstream in(read_file(dir / "a" / "metrics.jsonl"));
  std::string line;
  std::getline(in, line);
  const auto first = nlohmann::json::parse(line);
  CHECK(first["aux_loss"].get<double>() == 0.0);
  REQUIRE(first.contains("selection_bias"));
  double moved = 0;
  for (const auto& layer : first["selection_bias"])
    for (const auto& b : layer) moved += std::fabs(b.get<double>());
  CHECK(moved > 0);  // one step nudged every expert off even load
  REQUIRE(run_upcycle("tune --model " + q(model) + " --out " + q(dir / "b") + common + " --stop-at 4").code == 0);
  CHECK(read_file(dir / "b" / "step-000004" / "trainer_state.json").find("selection_bias") != std::string::npos);
  // The bias is the run's: resuming it without --balance bias is refused.
  r = run_upcycle("tune --resume " + q(dir / "b" / "step-000004") + " --out " + q(dir / "c") + " --data " + q(data) +
                  " --steps 8 --lr 3e-3 --batch-tokens 40 --seed 4");
  CHECK(r.code != 0);
  CHECK_MESSAGE(r.err.find("--balance bias") != std::string::npos, r.err);
  r = run_upcycle("tune --resume " + q(dir / "b" / "step-000004") + " --out " + q(dir / "b") + common);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(read_file(dir / "a" / "final" / "model.safetensors") == read_file(dir / "b" / "final" / "model.safetensors"));
  // A dense model has no experts to balance.
  r = run_upcycle("tune --model " + q(tiny_model(dir, "llama", 0)) + " --out " + q(dir / "d") + common);
  CHECK(r.code != 0);
}

TEST_CASE("tune: global-batch balancing equals per-layer with one micro-batch a step, and differs with several") {
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "mixtral", 2), data = sequences(dir, 24);
  auto tune = [&](const std::string& out, const std::string& extra) {
    const auto r = run_upcycle("tune --model " + q(model) + " --out " + q(dir / out) + " --data " + q(data) +
                               " --steps 4 --lr 3e-3 --batch-tokens 40 --seed 2 --aux-loss-coef 0.1" + extra);
    REQUIRE_MESSAGE(r.code == 0, r.err);
    return read_file(dir / out / "final" / "model.safetensors");
  };
  CHECK(tune("layer", "") == tune("batch", " --aux-loss global-batch"));
  CHECK(tune("layer2", " --grad-accum 2") != tune("batch2", " --aux-loss global-batch --grad-accum 2"));
  // The losses are the same language-model losses, only the balancing term differs.
  std::stringstream a(read_file(dir / "layer2" / "metrics.jsonl")), b(read_file(dir / "batch2" / "metrics.jsonl"));
  std::string la, lb;
  std::getline(a, la);
  std::getline(b, lb);
  const auto ja = nlohmann::json::parse(la), jb = nlohmann::json::parse(lb);
  CHECK(ja["loss"].get<double>() == jb["loss"].get<double>());  // the first step starts from the same weights
  CHECK(ja["aux_loss"].get<double>() != jb["aux_loss"].get<double>());
}

TEST_CASE("tune: a NaN loss stops the run and the last checkpoint stays intact") {
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "llama", 3), data = sequences(dir, 8);
  const auto r = run_upcycle("tune --model " + q(model) + " --data " + q(data) + " --out " + q(dir / "run") +
                             " --steps 5 --lr 1e30 --clip 0 --save-every 1 --batch-tokens 30");
  CHECK(r.code == 2);
  CHECK(r.err.find("step 2: the loss is NaN") != std::string::npos);
  CHECK(r.err.find("step-000001") != std::string::npos);
  CHECK(!fs::exists(dir / "run" / "step-000002"));
  CHECK(!fs::exists(dir / "run" / "final"));
  CHECK(open_checkpoint(dir / "run" / "step-000001")->config().model_type == "llama");
}

TEST_CASE("tune: frozen parts keep their bytes, the rest moves") {
  for (DType dtype : {DType::F32, DType::BF16}) {  // bf16: frozen parts read as stored, saved as bf16
    CAPTURE(dtype_name(dtype));
    ScratchDir dir;
    const fs::path model = tiny_model(dir, "mixtral", 4, dtype), data = sequences(dir, 8);
    const auto r = run_upcycle("tune --model " + q(model) + " --data " + q(data) + " --out " + q(dir / "run") +
                               " --steps 3 --lr 1e-2 --freeze router,embeddings --batch-tokens 40 --save-dtype " +
                               std::string(dtype_name(dtype)));
    REQUIRE_MESSAGE(r.code == 0, r.err);
    const auto before = open_checkpoint(model), after = open_checkpoint(dir / "run" / "final");
    for (const auto& t : before->tensors()) {
      const auto id = parse_tensor_name(t.name, Scheme::HF);
      const bool frozen = id->role == Role::Router || id->role == Role::TokenEmbedding || id->role == Role::LmHead;
      CHECK_MESSAGE(same_tensor(before->load(t.name), after->load(t.name)) == frozen, t.name);
    }
  }
}

TEST_CASE("tune: bad data and misuse are named") {
  ScratchDir dir;
  const fs::path model = tiny_model(dir, "llama", 5);
  write_file(dir / "bad.jsonl", "{\"input_ids\":[1,2,3]}\n{\"input_ids\":[1,2,\n{\"input_ids\":[4,5],\"labels\":[1]}\n");
  const std::string base = "tune --model " + q(model) + " --out " + q(dir / "run") + " --steps 1 --data ";
  auto r = run_upcycle(base + q(dir / "bad.jsonl"));
  CHECK(r.code == 2);
  CHECK(r.err.find("bad.jsonl: line 2: bad JSON") != std::string::npos);
  r = run_upcycle(base + q(dir / "bad.jsonl") + " --skip-bad");
  CHECK_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("skipped 2 malformed or over-long lines") != std::string::npos);

  write_file(dir / "oov.jsonl", "{\"input_ids\":[1,2,3]}\n{\"input_ids\":[1,40]}\n");
  r = run_upcycle(base + q(dir / "oov.jsonl") + " --overwrite");
  CHECK(r.code == 2);
  CHECK(r.err.find("oov.jsonl: line 2: token 40 is outside the model's vocabulary of 40") != std::string::npos);

  r = run_upcycle(base + q(sequences(dir, 3)));  // run/ already holds the --skip-bad run
  CHECK(r.code == 2);
  CHECK(r.err.find("already holds a run") != std::string::npos);
  CHECK(run_upcycle(base + q(dir / "bad.jsonl") + " --freeze routers").code == 1);
  CHECK(run_upcycle("tune --model " + q(model) + " --data x --out y").code == 1);  // no --steps
  CHECK(run_upcycle("tune --model " + q(model) + " --data x --out y --steps 0").code == 1);
  // Data with no counted token used to train a step at loss 0 and save it (issue 25).
  write_file(dir / "uncounted.jsonl", "{\"input_ids\":[1,2,3],\"labels\":[1,-100,-100]}\n");
  r = run_upcycle("tune --model " + q(model) + " --out " + q(dir / "u") + " --steps 1 --data " + q(dir / "uncounted.jsonl"));
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.find("uncounted.jsonl: no sample has a token that counts") != std::string::npos, r.err);
  CHECK(!fs::exists(dir / "u" / "final"));
  // Resuming past the run's end used to exit 0 having trained nothing (issue 25).
  const std::string seqs = q(sequences(dir, 6));
  REQUIRE(run_upcycle("tune --model " + q(model) + " --out " + q(dir / "s") + " --data " + seqs + " --steps 4 --stop-at 2").code == 0);
  r = run_upcycle("tune --resume " + q(dir / "s" / "step-000002") + " --out " + q(dir / "s") + " --data " + seqs + " --steps 2");
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.find("is at step 2, and this run would stop at step 2: nothing to train") != std::string::npos, r.err);
  // Resume states that were accepted (issue 25): a cursor no run of 2 steps reaches (it changed
  // the data order), an optimizer file with a tensor of no parameter, or f16 moments.
  const fs::path good = dir / "s" / "step-000002";
  auto resume_broken = [&](const std::string& name, const std::function<void(const fs::path&)>& spoil) {
    const fs::path copy = dir / "s" / ("step-" + name);
    fs::copy(good, copy, fs::copy_options::recursive);
    spoil(copy);
    return run_upcycle("tune --resume " + q(copy) + " --out " + q(dir / "s") + " --data " + seqs + " --steps 4");
  };
  r = resume_broken("epoch", [](const fs::path& c) {
    auto j = nlohmann::json::parse(read_file(c / "trainer_state.json"));
    j["epoch"] = int64_t(1'000'000'000'000);
    write_file(c / "trainer_state.json", j.dump());
  });
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.find("trainer_state.json: epoch and index: (1000000000000, ") != std::string::npos, r.err);
  auto rewrite_moments = [](const fs::path& c, DType dtype, bool extra) {
    const fs::path file = c / "optimizer.safetensors", old = c / "old.safetensors";
    fs::rename(file, old);
    const SafetensorsFile f = SafetensorsFile::open(old);
    std::vector<TensorInfo> infos;
    for (const auto& e : f.entries()) infos.push_back({e.info.name, dtype, e.info.shape});
    if (extra) infos.push_back({"exp_avg.model.layers.9.mlp.gate_proj.weight", DType::F32, {2}});
    SafetensorsWriter w(file, infos, f.metadata());
    for (const auto& e : f.entries()) w.write(f.load(e));
    if (extra) w.write(Tensor::zeros(DType::F32, {2}));
    w.finish();
  };
  r = resume_broken("extra", [&](const fs::path& c) { rewrite_moments(c, DType::F32, true); });
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.find("tensor 'exp_avg.model.layers.9.mlp.gate_proj.weight': not a moment of this model's trained "
                           "parameters") != std::string::npos,
                r.err);
  r = resume_broken("f16", [&](const fs::path& c) { rewrite_moments(c, DType::F16, false); });
  CHECK(r.code == 2);
  CHECK_MESSAGE(r.err.find("stored as f16, but this run's optimizer moments are f32") != std::string::npos, r.err);
  // A sample longer than the model's context used to fail inside the forward pass, naming
  // neither file nor line ("position 64 outside the rope table"; issue 25).
  std::string ids = "1";
  for (int i = 0; i < 69; ++i) ids += ",2";
  write_file(dir / "long.jsonl", "{\"input_ids\":[1,2,3]}\n{\"input_ids\":[" + ids + "]}\n");
  const std::string on_long = " --model " + q(model) + " --data " + q(dir / "long.jsonl");
  for (const bool tune : {true, false}) {
    int out = 0;  // a new run folder for each tune
    auto command = [&] { return tune ? "tune --steps 1 --out " + q(dir / ("l" + std::to_string(out++))) : "eval --metric loss"; };
    r = run_upcycle(command() + on_long);
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.err.find("long.jsonl: line 2: a sample of 70 tokens is longer than the model's context of 64 positions") !=
                      std::string::npos,
                  r.err);
    r = run_upcycle(command() + on_long + " --skip-bad");
    CHECK_MESSAGE(r.code == 0, r.err);
    CHECK_MESSAGE(r.err.find("skipped 1 malformed or over-long lines") != std::string::npos, r.err);
    r = run_upcycle(command() + on_long + " --seq-len 65");
    CHECK(r.code == 1);
    CHECK_MESSAGE(r.err.find("--seq-len 65 is longer than the model's context of 64 positions") != std::string::npos, r.err);
  }
  // Negative values that used to be accepted (issue 25): --stop-at -1 trained nothing and exited 0.
  for (const char* option : {"--stop-at", "--save-every", "--clip", "--z-loss-coef", "--aux-loss-coef", "--weight-decay"}) {
    r = run_upcycle("tune --model " + q(model) + " --data x --out y --steps 2 " + option + " -1");
    CHECK_MESSAGE(r.code == 1, option);
    CHECK_MESSAGE(r.err.find(std::string(option) + " must not be negative") != std::string::npos, r.err);
  }
}

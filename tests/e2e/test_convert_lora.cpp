// `upcycle convert --base --adapters` end to end on a tiny LoRA run: UpIT over its adapters writes
// a MixLoRA folder that forward reads, the same bytes for a seed; the baselines (sparse copies
// compute the dense LoRA model, btx, scratch's new experts), concatenated children at the summed
// rank, mixed ranks and targets, and misuse refused with nothing written.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "formats/open_checkpoint.hpp"
#include "formats/peft_adapter.hpp"
#include "merge/low_rank.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

// A chat model, instruction data, and the adapters of a LoRA run on it (steps 4, 8 and final).
struct LoraRun {
  ScratchDir dir;
  fs::path model, data;
  std::vector<fs::path> adapters;

  explicit LoraRun(const std::string& targets = "q_proj,v_proj,gate_proj,up_proj,down_proj", int rank = 4,
                   const std::string& name = "lora") {
    model = write_chat_model(dir.path(), "llama", 5);
    data = dir / "data.jsonl";
    std::ofstream out(data);
    for (int i = 0; i < 16; ++i)
      out << nlohmann::json{{"instruction", "word " + std::to_string(i)}, {"output", std::string(size_t(1 + i % 5), char('a' + i % 7))}}.dump() << "\n";
    out.close();
    tune(targets, rank, name);
  }
  // Another run's adapters on the same model.
  std::vector<fs::path> tune(const std::string& targets, int rank, const std::string& name) {
    const auto r = run_upcycle("tune --model " + q(model) + " --data " + q(data) + " --out " + q(dir / name) +
                               " --lora-rank " + std::to_string(rank) + " --lora-targets " + targets +
                               " --steps 12 --save-count 3 --lr 3e-2 --batch-tokens 96 --seq-len 128 --seed 2");
    REQUIRE_MESSAGE(r.code == 0, r.err);
    adapters = {dir / name / "step-000004", dir / name / "step-000008", dir / name / "final"};
    return adapters;
  }
  std::string convert(const std::vector<fs::path>& from, const std::string& out, const std::string& extra) const {
    std::string args = "convert --base " + q(model) + " --adapters";
    for (const auto& a : from) args += " " + q(a);
    return args + " --out " + q(dir / out) + " " + extra;
  }
  // forward's logits of a fixed prompt under an adapter folder.
  std::vector<float> logits(const fs::path& adapter, const std::string& out) const {
    const auto r = run_upcycle("forward --model " + q(model) + " --tokens 1,5,7,3,2,9 --adapter " + q(adapter) +
                               " --out " + q(dir / out));
    REQUIRE_MESSAGE(r.code == 0, r.err);
    const std::string bytes = read_file(dir / out);
    std::vector<float> v(bytes.size() / sizeof(float));
    std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
    return v;
  }
};

double max_gap(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  return worst;
}

// A module's term s·B·A as the folder holds it, materialised.
std::vector<float> term(const LoraAdapter& a, int64_t layer, const std::string& module, int64_t expert) {
  for (const LoraModule& m : a.modules)
    if (m.layer == layer && m.module == module && m.expert == expert) {
      const auto av = m.a.to_f32_vector(), bv = m.b.to_f32_vector();
      return merge::dense_delta({av, bv, m.a.shape()[0], a.config.scaling()}, m.b.shape()[0], m.a.shape()[1]);
    }
  FAIL("no module " << module << " of layer " << layer << ", expert " << expert);
  return {};
}

}  // namespace

TEST_CASE("convert --adapters: UpIT over a LoRA run's adapters is a MixLoRA folder forward reads, the same bytes for a seed") {
  LoraRun run;
  const std::string args = "--experts 5 --candidates 3 --seed-data " + q(run.data) + " --router-epochs 2 --seq-len 128 --seed 4";
  auto r = run_upcycle(run.convert(run.adapters, "a", args));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const ModelConfig base = open_checkpoint(run.model)->config();
  const LoraAdapter moe = read_peft_adapter(run.dir / "a", base);
  CHECK(moe.config.experts == 5);
  CHECK(moe.config.top_k == 2);
  CHECK(moe.config.rank == 4);
  CHECK(moe.config.scaling() == 1.0);  // every scale folded into B
  CHECK(moe.routers.size() == size_t(base.num_hidden_layers));
  const auto report = nlohmann::json::parse(read_file(run.dir / "a" / "upcycle_convert.json"));
  REQUIRE(report["pool"].size() == 5);
  for (int e = 3; e < 5; ++e) {
    CHECK(report["pool"][e].contains("parents"));
    CHECK(report["pool"][e]["discarded"].get<double>() >= 0.0);
    CHECK(report["pool"][e]["discarded"].get<double>() < 1.0);
  }
  CHECK(report["seed_samples"] == 16);
  CHECK(report["router_steps"].get<int>() > 0);
  // The adapters among the experts are kept as they are: expert e's term is its adapter's.
  const LoraAdapter first = read_peft_adapter(run.adapters[0], base);
  const auto want = term(first, 1, "down_proj", -1), got = term(moe, 1, "down_proj", 0);
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(double(want[i]) - got[i]));
  CHECK(worst < 1e-6);
  // forward reads it, and a seed gives the same files.
  CHECK(run.logits(run.dir / "a", "a.f32").size() == 6 * size_t(base.vocab_size));
  r = run_upcycle(run.convert(run.adapters, "b", args));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "upcycle_convert.json"})
    CHECK(read_file(run.dir / "a" / f) == read_file(run.dir / "b" / f));
  // The fitted routers are not the random ones they started from.
  r = run_upcycle(run.convert(run.adapters, "random", "--experts 5 --candidates 3 --router random --seed 4 --aux-loss-coef 0.07"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const LoraAdapter random = read_peft_adapter(run.dir / "random", base);
  CHECK(random.config.aux_loss_coef == 0.07);  // --aux-loss-coef reaches the folder, as a Mixtral's config
  CHECK(moe.config.aux_loss_coef == 0.01);  // convert's default
  CHECK(random.routers[0].to_f32_vector() != moe.routers[0].to_f32_vector());
  CHECK(random.modules.size() == moe.modules.size());
}

TEST_CASE("convert --adapters: sparse copies compute the dense LoRA model, and btx, scratch and concatenated children") {
  LoraRun run;
  auto r = run_upcycle(run.convert(run.adapters, "sparse", "--method sparse --from 2 --experts 4"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(max_gap(run.logits(run.dir / "sparse", "sparse.f32"), run.logits(run.adapters[2], "dense.f32")) < 1e-5);

  r = run_upcycle(run.convert(run.adapters, "btx", "--method btx"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const ModelConfig base = open_checkpoint(run.model)->config();
  CHECK(read_peft_adapter(run.dir / "btx", base).config.experts == 3);

  r = run_upcycle(run.convert(run.adapters, "scratch", "--method scratch --experts 4"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  for (const LoraModule& m : read_peft_adapter(run.dir / "scratch", base).modules)
    if (m.expert >= 0) {
      const auto b = m.b.to_f32_vector();
      CHECK(std::all_of(b.begin(), b.end(), [](float x) { return x == 0.0f; }));  // LoRAMoE's new experts
    }

  // Linear children concatenated: rank 4 + 4, exact.
  r = run_upcycle(run.convert(run.adapters, "concat", "--experts 4 --lora-child concat --merge linear --router random"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(read_peft_adapter(run.dir / "concat", base).config.rank == 8);
}

TEST_CASE("convert --adapters: adapters of other ranks and targets pool, a module one lacks a zero term there") {
  LoraRun run("q_proj,gate_proj", 2, "a");
  const fs::path a = run.adapters[2];
  const fs::path b = run.tune("v_proj,up_proj,down_proj", 4, "b")[2];
  auto r = run_upcycle(run.convert({a, b}, "mixed", "--method btx"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const ModelConfig base = open_checkpoint(run.model)->config();
  const LoraAdapter moe = read_peft_adapter(run.dir / "mixed", base);
  CHECK(moe.config.rank == 4);
  CHECK(moe.config.target_modules == std::vector<std::string>{"q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"});
  const auto zero = term(moe, 0, "up_proj", 0);  // adapter a has no up_proj
  CHECK(std::all_of(zero.begin(), zero.end(), [](float x) { return x == 0.0f; }));
  const auto want = term(read_peft_adapter(a, base), 0, "gate_proj", -1), got = term(moe, 0, "gate_proj", 0);
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(double(want[i]) - got[i]));
  CHECK(worst < 1e-6);
}

TEST_CASE("convert --adapters: misuse is refused, naming the option or file, with nothing written") {
  LoraRun run("q_proj,gate_proj", 2);
  const std::string adapters = " --adapters " + q(run.adapters[0]) + " " + q(run.adapters[2]);
  const std::string out = " --router random --out " + q(run.dir / "o");
  auto expect = [&](const std::string& args, int code, const std::string& says) {
    const auto r = run_upcycle(args);
    CHECK_MESSAGE(r.code == code, args);
    CHECK_MESSAGE(r.err.find(says) != std::string::npos, r.err);
    CHECK_FALSE(fs::exists(run.dir / "o"));
  };
  expect("convert" + adapters + out, 1, "give it as --base");
  expect("convert --base " + q(run.model) + adapters + " --checkpoints " + q(run.model) + out, 1, "not both");
  expect("convert --base " + q(run.model) + adapters + " --method drop" + out, 1, "use scratch");
  expect("convert --base " + q(run.model) + adapters + " --experts 3 --lora-child concat" + out, 1, "--merge linear");
  expect("convert --base " + q(run.model) + adapters + " --fitness function --seed-data " + q(run.data) + out, 1,
         "--fitness function is for checkpoints");
  expect("convert --base " + q(run.model) + adapters + " --method scratch --router upit --seed-data " + q(run.data) +
             " --out " + q(run.dir / "o"),
         1, "--router must be random");
  // Files: a MixLoRA folder as input, an adapter of another shape, no FFN module among the targets.
  REQUIRE(run_upcycle(run.convert(run.adapters, "moe", "--method btx")).code == 0);
  expect("convert --base " + q(run.model) + " --adapters " + q(run.dir / "moe") + " " + q(run.adapters[0]) + out, 2,
         "MixLoRA folder");
  ModelConfig wide = tiny_config("llama");
  wide.intermediate_size *= 2;
  const fs::path other = write_model(run.dir, "wide", wide, 6);
  expect("convert --base " + q(other) + adapters + out, 2, "adapter_model.safetensors");
  const fs::path attention = run.tune("q_proj,v_proj", 2, "attention")[2];
  expect("convert --base " + q(run.model) + " --adapters " + q(attention) + " " + q(attention) + out, 2,
         "adapts an FFN module");
}

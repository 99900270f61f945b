// `upcycle convert` end to end on tiny llama checkpoints: sparse upcycling computes the dense
// model, UpIT keeps every checkpoint's FFN among its experts with mean shared weights, a seed
// gives byte-identical files, and bad input is named.
#include <doctest/doctest.h>

#include <cctype>
#include <fstream>
#include <set>
#include <span>
#include <utility>

#include <nlohmann/json.hpp>

#include "formats/open_checkpoint.hpp"
#include "merge/merge.hpp"
#include "tests/common/fixtures.hpp"
#include "trainer/model.hpp"

using namespace upcycle;
using namespace upcycle::test;

TEST_CASE("convert: sparse upcycling of one checkpoint computes the dense model's logits") {
  ScratchDir dir;
  const fs::path a = write_dense(dir, "a", 1);
  const auto r = run_upcycle("convert --checkpoints " + q(a) + " --method sparse --experts 4 --top-k 2 --out " +
                             q(dir / "moe"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto moe = open_checkpoint(dir / "moe");
  CHECK(moe->config().model_type == "mixtral");
  CHECK(moe->config().num_local_experts == 4);
  CHECK(moe->config().num_experts_per_tok == 2);
  CHECK(moe->config().raw["an_unknown_field"]["kept"] == true);  // every other field carried over
  const std::vector<int32_t> ids = {1, 5, 9, 3, 30, 2, 17};
  const auto want = Model(*open_checkpoint(a)).forward(pack({ids}));
  const auto got = Model(*moe).forward(pack({ids}));
  REQUIRE(got.size() == want.size());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, double(std::abs(got[i] - want[i]))), scale = std::max(scale, double(std::abs(want[i])));
  CHECK(worst <= 1e-5 * scale);
}

TEST_CASE("convert: qwen3 checkpoints make a Qwen3-MoE, and sparse upcycling computes the dense model") {
  ScratchDir dir;
  std::vector<fs::path> dense;
  for (uint64_t seed : {1, 2}) dense.push_back(write_dense(dir, "q" + std::to_string(seed), seed, "qwen3"));
  auto r = run_upcycle("convert --checkpoints " + q(dense[0]) + " " + q(dense[1]) +
                       " --experts 3 --top-k 2 --router random --out " + q(dir / "moe"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto moe = open_checkpoint(dir / "moe");
  const ModelConfig& c = moe->config();
  CHECK(c.model_type == "qwen3_moe");
  CHECK(c.raw["architectures"][0] == "Qwen3MoeForCausalLM");
  CHECK(c.raw["norm_topk_prob"] == true);
  CHECK(c.num_local_experts == 3);
  CHECK(c.expert_intermediate_size() == tiny_config("qwen3").intermediate_size);
  CHECK(moe->find("model.layers.1.mlp.experts.2.up_proj.weight") != nullptr);  // Qwen's names
  CHECK(moe->find("model.layers.0.mlp.gate.weight") != nullptr);
  CHECK(moe->find("model.layers.0.self_attn.k_norm.weight") != nullptr);
  r = run_upcycle("convert --checkpoints " + q(dense[0]) + " " + q(write_dense(dir, "l", 3)) +
                  " --experts 2 --router random --out " + q(dir / "mixed"));
  CHECK(r.code == 2);  // families mixed
  CHECK(r.err.find("is not the same architecture and shape") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "mixed"));
  r = run_upcycle("convert --checkpoints " + q(dense[0]) + " --method sparse --experts 2 --arch mixtral --out " +
                  q(dir / "arch"));
  CHECK(r.code == 2);  // an --arch the checkpoints cannot make
  CHECK(r.err.find("is a qwen3 checkpoint, which makes a qwen3_moe, not the mixtral that --arch asks for") !=
        std::string::npos);
  r = run_upcycle("convert --checkpoints " + q(write_dense(dir, "l2", 4)) + " --method sparse --experts 2 --arch qwen3_moe --out " +
                  q(dir / "arch"));
  CHECK(r.code == 2);
  CHECK(r.err.find("makes a mixtral, not the qwen3_moe") != std::string::npos);
  r = run_upcycle("convert --checkpoints " + q(dense[0]) + " --method sparse --experts 2 --arch qwen2_moe --out " +
                  q(dir / "arch"));
  CHECK(r.code == 2);
  CHECK(r.err.find("is a qwen3 checkpoint, which makes a qwen3_moe, not the qwen2_moe") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "arch"));
  r = run_upcycle("convert --checkpoints " + q(dense[0]) + " --method sparse --experts 2 --arch qwen3_moe --out " +
                  q(dir / "arch"));
  CHECK_MESSAGE(r.code == 0, r.err);
  // Each checkpoint's FFN is an expert as it was.
  CHECK(tensor_values(*moe, "model.layers.0.mlp.experts.1.down_proj.weight") ==
        tensor_values(*open_checkpoint(dense[1]), "model.layers.0.mlp.down_proj.weight"));

  r = run_upcycle("convert --checkpoints " + q(dense[0]) + " --method sparse --experts 4 --top-k 2 --out " +
                  q(dir / "sparse"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const std::vector<int32_t> ids = {1, 5, 9, 3, 30, 2, 17};
  const auto want = Model(*open_checkpoint(dense[0])).forward(pack({ids}));
  const auto got = Model(*open_checkpoint(dir / "sparse")).forward(pack({ids}));
  REQUIRE(got.size() == want.size());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < got.size(); ++i)
    worst = std::max(worst, double(std::abs(got[i] - want[i]))), scale = std::max(scale, double(std::abs(want[i])));
  CHECK(worst <= 1e-5 * scale);
}

TEST_CASE("convert: UpIT keeps each checkpoint's FFN, means the shared weights, and a seed repeats byte for byte") {
  ScratchDir dir;
  const fs::path a = write_dense(dir, "a", 1), b = write_dense(dir, "b", 2), c = write_dense(dir, "c", 3);
  const std::string args = "convert --checkpoints " + q(a) + " " + q(b) + " " + q(c) +
                           " --experts 5 --top-k 2 --candidates 3 --router random --out ";
  auto r = run_upcycle(args + q(dir / "x") + " --seed 4");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("expansion round 2/2") != std::string::npos);
  REQUIRE(run_upcycle(args + q(dir / "y") + " --seed 4").code == 0);
  for (const char* file : {"model.safetensors", "config.json", "upcycle_convert.json"})
    CHECK_MESSAGE(read_file(dir / "x" / file) == read_file(dir / "y" / file), file);
  REQUIRE(run_upcycle(args + q(dir / "z") + " --seed 5").code == 0);
  CHECK(read_file(dir / "x" / "model.safetensors") != read_file(dir / "z" / "model.safetensors"));

  const auto moe = open_checkpoint(dir / "x");
  std::vector<std::unique_ptr<Checkpoint>> src;
  for (const fs::path& p : {a, b, c}) src.push_back(open_checkpoint(p));
  for (int l = 0; l < 2; ++l) {
    for (int k = 0; k < 3; ++k)
      for (auto [dense_role, expert_role] : {std::pair{Role::Gate, Role::ExpertGate}, {Role::Up, Role::ExpertUp},
                                             {Role::Down, Role::ExpertDown}})
        CHECK(tensor_values(*moe, tensor_name({expert_role, l, k}, Scheme::HF)) ==
              tensor_values(*src[size_t(k)], tensor_name({dense_role, l}, Scheme::HF)));
    const std::string q_name = tensor_name({Role::Q, l}, Scheme::HF);
    const auto mean = tensor_values(*moe, q_name);
    const auto qa = tensor_values(*src[0], q_name), qb = tensor_values(*src[1], q_name), qc = tensor_values(*src[2], q_name);
    for (size_t i = 0; i < mean.size(); ++i) CHECK(mean[i] == doctest::Approx((qa[i] + qb[i] + qc[i]) / 3).epsilon(1e-6));
  }
  // The fused layout and HDF5 hold the same model.
  REQUIRE(run_upcycle(args + q(dir / "fused") + " --seed 4 --fused").code == 0);
  REQUIRE(run_upcycle(args + q(dir / "x.h5") + " --seed 4").code == 0);
  const auto fused = open_checkpoint(dir / "fused");
  CHECK(fused->find(tensor_name({Role::ExpertsGateUp, 1}, Scheme::HFFused)) != nullptr);
  const Batch probe = pack({{3, 1, 4, 1, 5, 9, 2, 6}});
  const auto logits = Model(*moe).forward(probe);
  CHECK(Model(*fused).forward(probe) == logits);
  CHECK(Model(*open_checkpoint(dir / "x.h5")).forward(probe) == logits);
  const auto report = nlohmann::json::parse(read_file(dir / "x" / "upcycle_convert.json"));
  CHECK(report["pool"].size() == 5);
  CHECK(report["distances_after"].size() == 5);
  // The model runs.
  CHECK(Model(*moe).forward(pack({{1, 2, 3}})).size() == 3 * 40);
}

// FFN tensors of many pages, so that a writer dropping a written buffer's pages would show: a
// grandchild merged from a parent whose tensor was already written must see the parent intact.
TEST_CASE("convert: every child is its recipe's DARE merge of its parents as written") {
  ScratchDir dir;
  std::vector<std::unique_ptr<Checkpoint>> src;
  std::string paths;
  for (int k = 0; k < 3; ++k) {
    const fs::path p = write_dense(dir, "c" + std::to_string(k), uint64_t(10 + k), "llama", 1024);  // 64 KB tensors
    src.push_back(open_checkpoint(p));
    paths += " " + q(p);
  }
  auto r = run_upcycle("convert --checkpoints" + paths + " --experts 7 --router random --seed 2 --out " + q(dir / "x"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto moe = open_checkpoint(dir / "x");
  const auto pool = nlohmann::json::parse(read_file(dir / "x" / "upcycle_convert.json"))["pool"];
  bool grandchild = false;
  for (size_t e = 3; e < pool.size(); ++e) {
    const int pa = pool[e]["parents"][0], pb = pool[e]["parents"][1];
    grandchild = grandchild || pa >= 3 || pb >= 3;
    merge::Options dare{merge::Method::Dare};
    dare.weights = pool[e]["weights"].get<std::vector<double>>();
    dare.seed = pool[e]["seed"];
    for (int l = 0; l < 2; ++l)
      for (auto [dense_role, expert_role] : {std::pair{Role::Gate, Role::ExpertGate}, {Role::Up, Role::ExpertUp},
                                             {Role::Down, Role::ExpertDown}}) {
        const std::string key = tensor_name({dense_role, l}, Scheme::HF);
        std::vector<double> sum(tensor_values(*src[0], key).size());
        for (const auto& c : src) {
          const auto x = tensor_values(*c, key);
          for (size_t i = 0; i < x.size(); ++i) sum[i] += x[i];
        }
        std::vector<float> base(sum.size());
        for (size_t i = 0; i < sum.size(); ++i) base[i] = float(sum[i] / 3.0);
        const auto a = tensor_values(*moe, tensor_name({expert_role, l, pa}, Scheme::HF));
        const auto b = tensor_values(*moe, tensor_name({expert_role, l, pb}, Scheme::HF));
        const std::span<const float> inputs[] = {a, b};
        std::vector<float> child(a.size());
        merge::merge_tensor(child, inputs, base, dare, key);
        CHECK_MESSAGE(child == tensor_values(*moe, tensor_name({expert_role, l, int(e)}, Scheme::HF)), key, " expert ", e);
      }
  }
  REQUIRE(grandchild);
}

// The shared weights are merged a block at a time: with blocks of a few elements, DARE (masks by
// element index, base = the checkpoints' mean) gives the bits of one merge of the whole tensors.
// Computed experts are made a block at a time: blocks of 4096 elements (16384-element FFN
// tensors, children of children, re-drawn neurons) give the bits of whole-tensor blocks, for
// ranges asked at any offset too.
TEST_CASE("convert: BTX, drop-upcycling and misuse") {
  ScratchDir dir;
  const fs::path a = write_dense(dir, "a", 1), b = write_dense(dir, "b", 2);
  auto r = run_upcycle("convert --checkpoints " + q(a) + " " + q(b) + " --method btx --out " + q(dir / "btx"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(open_checkpoint(dir / "btx")->config().num_local_experts == 2);
  r = run_upcycle("convert --checkpoints " + q(a) + " --method drop --experts 3 --out " + q(dir / "drop"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto drop = open_checkpoint(dir / "drop");
  const auto e0 = tensor_values(*drop, tensor_name({Role::ExpertGate, 0, 0}, Scheme::HF));
  const auto e1 = tensor_values(*drop, tensor_name({Role::ExpertGate, 0, 1}, Scheme::HF));
  CHECK(e0 != e1);  // each expert re-draws its own neurons

  r = run_upcycle("convert --checkpoints " + q(a) + " " + q(write_dense(dir, "m", 3, "mixtral")) + " --router random --out " + q(dir / "o"));
  CHECK(r.code == 2);
  CHECK(r.err.find("already an MoE model") != std::string::npos);
  r = run_upcycle("convert --checkpoints " + q(write_dense(dir, "qw", 3, "qwen2")) +
                  " --method sparse --top-k 1 --arch mixtral --out " + q(dir / "o"));
  CHECK(r.code == 2);  // qwen2's biases cannot go into a Mixtral
  CHECK(r.err.find("is a qwen2 checkpoint, which makes a qwen2_moe, not the mixtral") != std::string::npos);
  r = run_upcycle("convert --checkpoints " + q(a) + " --router hidden --out " + q(dir / "o"));
  CHECK(r.code == 1);
  // Checked up front, before any checkpoint is read: top-k above the experts, a negative count.
  r = run_upcycle("convert --checkpoints " + q(a) + " " + q(a) + " --experts 2 --top-k 3 --router random --out " + q(dir / "o"));
  CHECK(r.code == 1);
  CHECK(r.err.find("--top-k must lie in [1, --experts] (2)") != std::string::npos);
  r = run_upcycle("convert --checkpoints " + q(a) + " " + q(a) + " --search-sample -1 --router random --out " + q(dir / "o"));
  CHECK(r.code == 1);
  CHECK(r.err.find("--search-sample: '-1' is not a non-negative integer") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "o"));
  r = run_upcycle("convert --checkpoints " + q(a) + " " + q(b) + " --method btx --experts 3 --out " + q(dir / "o"));
  CHECK(r.code == 1);
  // Merge and search options out of range are usage errors, before anything runs.
  for (const char* bad : {"--drop-rate 1.5", "--density 0", "--candidates 0", "--distant-pairs 0"}) {
    CAPTURE(bad);
    r = run_upcycle("convert --checkpoints " + q(a) + " " + q(b) + " --experts 3 --router random " + bad + " --out " + q(dir / "o"));
    CHECK(r.code == 1);
    CHECK(r.err.find(std::string(bad).substr(0, std::string(bad).find(' '))) != std::string::npos);
  }
  // The merge options' help and errors list the registry's methods.
  const std::string help = run_upcycle("convert --help").out;
  for (auto [option, next] : {std::pair{"--merge", "--drop-rate"}, {"--shared-merge", "--shared-from"}}) {
    CAPTURE(option);
    const size_t from = help.find(std::string(option) + " arg"), to = help.find(std::string(next) + " arg");
    REQUIRE(from < to);
    std::set<std::string> words;
    for (std::string w; char c : help.substr(from, to - from) + " ") {
      if (std::isalnum(static_cast<unsigned char>(c)) || c == '_') w += c;
      else if (!w.empty()) words.insert(std::exchange(w, ""));
    }
    for (const merge::MethodInfo& m : merge::kMethods) CHECK(words.contains(std::string(m.name)));
    r = run_upcycle("convert --checkpoints " + q(a) + " " + q(b) + " --router random " + option + " frobnicate --out " +
                    q(dir / "o"));
    CHECK(r.code == 1);
    CHECK(r.err.find("'frobnicate' is not one of " + merge::method_names()) != std::string::npos);
  }
  CHECK(!fs::exists(dir / "o"));
}

// max |a − b| / max |b|
double relative_difference(std::span<const float> a, std::span<const float> b) {
  REQUIRE(a.size() == b.size());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i)
    worst = std::max(worst, double(std::abs(a[i] - b[i]))), scale = std::max(scale, double(std::abs(b[i])));
  return worst / scale;
}

TEST_CASE("convert: qwen2 checkpoints make a Qwen2-MoE, its shared expert from where --shared-expert says") {
  ScratchDir dir;
  std::vector<fs::path> dense;
  for (uint64_t seed : {1, 2}) dense.push_back(write_dense(dir, "q" + std::to_string(seed), seed, "qwen2"));
  const std::string both = q(dense[0]) + " " + q(dense[1]);
  auto r = run_upcycle("convert --checkpoints " + both + " --method sparse --experts 3 --out " + q(dir / "moe"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto moe = open_checkpoint(dir / "moe");
  const ModelConfig& c = moe->config();
  CHECK(c.model_type == "qwen2_moe");
  CHECK(c.raw["architectures"][0] == "Qwen2MoeForCausalLM");
  CHECK(c.norm_topk_prob);
  CHECK(c.shared_expert_intermediate_size == tiny_config("qwen2").intermediate_size);
  const std::string shared = "model.layers.1.mlp.shared_expert.";
  for (const char* t : {"gate_proj", "up_proj", "down_proj"}) CHECK(moe->find(shared + t + ".weight") != nullptr);
  CHECK(moe->find("model.layers.0.self_attn.q_proj.bias") != nullptr);
  // zero (the default): the shared expert adds nothing, so sparse upcycling computes the dense model.
  for (float x : tensor_values(*moe, shared + "down_proj.weight")) REQUIRE(x == 0.0f);
  for (float x : tensor_values(*moe, "model.layers.1.mlp.shared_expert_gate.weight")) REQUIRE(x != 0.0f);
  const std::vector<int32_t> ids = {1, 5, 9, 3, 30, 2, 17};
  const auto want = Model(*open_checkpoint(dense[0])).forward(pack({ids}));
  CHECK(relative_difference(Model(*moe).forward(pack({ids})), want) <= 1e-5);

  // checkpoint:N takes its FFN; mean the checkpoints' mean; either way the model differs.
  r = run_upcycle("convert --checkpoints " + both + " --method sparse --experts 3 --shared-expert checkpoint:1 --out " +
                  q(dir / "from1"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto from1 = open_checkpoint(dir / "from1");
  CHECK(tensor_values(*from1, shared + "down_proj.weight") ==
        tensor_values(*open_checkpoint(dense[1]), "model.layers.1.mlp.down_proj.weight"));
  CHECK(relative_difference(Model(*from1).forward(pack({ids})), want) > 1e-3);
  r = run_upcycle("convert --checkpoints " + both + " --method btx --shared-expert mean --unnormalised-topk --out " +
                  q(dir / "mean"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto mean = open_checkpoint(dir / "mean");
  CHECK_FALSE(mean->config().norm_topk_prob);
  const auto g0 = tensor_values(*open_checkpoint(dense[0]), "model.layers.0.mlp.up_proj.weight");
  const auto g1 = tensor_values(*open_checkpoint(dense[1]), "model.layers.0.mlp.up_proj.weight");
  const auto got = tensor_values(*mean, "model.layers.0.mlp.shared_expert.up_proj.weight");
  for (size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == float((double(g0[i]) + double(g1[i])) / 2));

  // Refused with exit 2 and nothing written: another family's options, a source that is not one.
  const std::pair<std::string, std::string> refused[] = {
      {" --shared-expert checkpoint:2", "--shared-expert 2 is not a checkpoint index"},
      {" --shared-expert base", "--shared-expert base takes the FFN of --base"},
      {" --shared-expert half", "'half' is not zero, mean, base or checkpoint:N"},
  };
  for (const auto& [options, message] : refused) {
    CAPTURE(options);
    r = run_upcycle("convert --checkpoints " + both + " --method btx" + options + " --out " + q(dir / "o"));
    CHECK(r.code == 1);
    CHECK(r.err.find(message) != std::string::npos);
  }
  const fs::path llama = write_dense(dir, "l", 3);
  for (const char* option : {"--shared-expert mean", "--unnormalised-topk"}) {
    CAPTURE(option);
    r = run_upcycle("convert --checkpoints " + q(llama) + " --method sparse --experts 2 " + option + " --out " +
                    q(dir / "o"));
    CHECK(r.code == 1);
    CHECK(r.err.find("mixtral") != std::string::npos);
  }
  CHECK_FALSE(fs::exists(dir / "o"));
}

TEST_CASE("convert: UpIT's router stage assigns seed samples by loss and pre-optimises the routers") {
  ScratchDir dir;
  std::vector<fs::path> ckpts;
  for (int k = 0; k < 2; ++k) {
    fs::create_directories(dir / std::to_string(k));
    ckpts.push_back(write_chat_model(dir / std::to_string(k), "llama", uint64_t(10 + k)));
  }
  {
    std::ofstream data(dir / "data.jsonl");
    for (int i = 0; i < 40; ++i)
      data << nlohmann::json{{"instruction", "word " + std::to_string(i)}, {"output", std::string(size_t(1 + i % 5), char('a' + i % 7))}}.dump() << "\n";
  }
  const std::string args = "convert --checkpoints " + q(ckpts[0]) + " " + q(ckpts[1]) +
                           " --experts 3 --candidates 2 --data " + q(dir / "data.jsonl") +
                           " --seed-fraction 0.5 --seed-min 10 --router-epochs 3 --router-lr 1e-2 --seq-len 128 --out ";
  auto r = run_upcycle(args + q(dir / "moe"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("router pre-optimisation:") != std::string::npos);
  const auto report = nlohmann::json::parse(read_file(dir / "moe" / "upcycle_convert.json"));
  CHECK(report["router"] == "upit");
  CHECK(report["seed_samples"] == 20);
  int64_t assigned = 0;
  for (const auto& c : report["seed_per_expert"]) assigned += c.get<int64_t>();
  CHECK(assigned == 20);
  CHECK(report["router_bce"][1].get<double>() < report["router_bce"][0].get<double>());
  // The routers are no longer the random ones: compare with --router random.
  REQUIRE(run_upcycle(args + q(dir / "random") + " --router random").code == 0);
  const auto fitted = open_checkpoint(dir / "moe"), random = open_checkpoint(dir / "random");
  const std::string router0 = tensor_name({Role::Router, 0}, Scheme::HF);
  CHECK(tensor_values(*fitted, router0) != tensor_values(*random, router0));
  CHECK(tensor_values(*fitted, tensor_name({Role::Q, 1}, Scheme::HF)) == tensor_values(*random, tensor_name({Role::Q, 1}, Scheme::HF)));
  // The hidden init: routers from the experts' mean hidden states, no pre-optimisation.
  r = run_upcycle(args + q(dir / "hidden") + " --router hidden");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("router pre-optimisation:") == std::string::npos);
  CHECK(tensor_values(*open_checkpoint(dir / "hidden"), router0) != tensor_values(*random, router0));
  // The tokenizer travels: eval reads the MoE with its chat template.
  CHECK(fs::exists(dir / "moe" / "tokenizer.json"));
  r = run_upcycle("eval --model " + q(dir / "moe") + " --data " + q(dir / "data.jsonl"));
  CHECK_MESSAGE(r.code == 0, r.err);
  // Without data, the upit router is a usage error.
  r = run_upcycle("convert --checkpoints " + q(ckpts[0]) + " " + q(ckpts[1]) + " --out " + q(dir / "x"));
  CHECK(r.code == 1);
  CHECK(r.err.find("--seed-data or --data") != std::string::npos);
  r = run_upcycle("convert --checkpoints " + q(ckpts[0]) + " " + q(ckpts[1]) + " --router random --fitness function --out " +
                  q(dir / "x"));
  CHECK(r.code == 1);
  CHECK(r.err.find("--fitness function scores the experts on seed data") != std::string::npos);
}

TEST_CASE("convert: the search in function scores each expert as the router stage does, and a seed repeats it") {
  ScratchDir dir;
  std::vector<fs::path> ckpts;
  for (int k = 0; k < 3; ++k) {
    fs::create_directories(dir / std::to_string(k));
    ckpts.push_back(write_chat_model(dir / std::to_string(k), "llama", uint64_t(20 + k)));
  }
  {
    std::ofstream data(dir / "data.jsonl");
    for (int i = 0; i < 16; ++i)
      data << nlohmann::json{{"instruction", "word " + std::to_string(i)}, {"output", std::string(size_t(1 + i % 5), char('a' + i % 7))}}.dump() << "\n";
  }
  const std::string args = "convert --checkpoints " + q(ckpts[0]) + " " + q(ckpts[1]) + " " + q(ckpts[2]) +
                           " --experts 5 --candidates 3 --fitness function --seed-data " + q(dir / "data.jsonl") +
                           " --router-epochs 1 --seq-len 128 --out ";
  auto r = run_upcycle(args + q(dir / "a"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto report = nlohmann::json::parse(read_file(dir / "a" / "upcycle_convert.json"));
  CHECK(report["fitness"] == "function");
  // The search's seed losses of the pool it chose are those the router stage measures on the
  // assembled MoE: the scorer's dense models are the written experts'.
  const auto& searched = report["function_distances_after"];
  const auto& routed = report["seed_loss_distances"];
  REQUIRE(searched.size() == 5);
  REQUIRE(routed.size() == 5);
  for (size_t i = 0; i < 5; ++i)
    for (size_t j = 0; j < 5; ++j) CHECK(searched[i][j].get<double>() == doctest::Approx(routed[i][j].get<double>()).epsilon(1e-9));
  for (size_t i = 0; i < 3; ++i)
    for (size_t j = 0; j < 3; ++j) CHECK(report["function_distances_before"][i][j] == searched[i][j]);
  CHECK(searched[3][4].get<double>() > 0);
  // A seed gives the same files.
  REQUIRE(run_upcycle(args + q(dir / "b")).code == 0);
  for (const char* f : {"model.safetensors", "upcycle_convert.json"}) CHECK(read_file(dir / "a" / f) == read_file(dir / "b" / f));
}

// The way back from load_weights: an assembled MoE's weights, as a checkpoint laid out like it,
// are its tensors again (dtypes of passed-through bf16 FFNs and fused experts included).
// The router stage builds the MoE once: the checkpoints' tensors are read only by the one
// assembly load_weights reads, not by a second one for writing; and what it writes is the MoE
// assembled whole with the routers it fitted.
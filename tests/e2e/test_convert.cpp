// `upcycle convert` end to end on tiny llama checkpoints: sparse upcycling computes the dense
// model, UpIT keeps every checkpoint's FFN among its experts with mean shared weights, a seed
// gives byte-identical files, and bad input is named.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <thread>
#include <tuple>

#include <nlohmann/json.hpp>

#include "convert/assemble.hpp"
#include "convert/router_stage.hpp"
#include "convert/weights_checkpoint.hpp"
#include "core/error.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/open_checkpoint.hpp"
#include "merge/merge.hpp"
#include "pool/ffn_source.hpp"
#include "tests/common/fixtures.hpp"
#include "trainer/model.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

fs::path dense(const ScratchDir& dir, const std::string& name, uint64_t seed, const std::string& type = "llama",
               int64_t intermediate = 0) {
  ModelConfig c = tiny_config(type);
  if (intermediate) c.intermediate_size = intermediate;
  WriteOptions opts;
  opts.progress = false;
  write_checkpoint(*random_checkpoint(c, seed), dir / name, opts);
  return dir / name;
}

std::vector<float> tensor(const Checkpoint& c, const std::string& name) { return c.load(name).to_f32_vector(); }

// k dense llama checkpoints written to dir (seeds first_seed...) and opened, as an FfnSource.
struct Sources {
  std::vector<std::unique_ptr<Checkpoint>> owned;
  std::vector<const Checkpoint*> ptrs;
  pool::FfnSource source;
  Sources(const ScratchDir& dir, int k, uint64_t first_seed, int64_t intermediate = 0)
      : ptrs(open(dir, k, first_seed, intermediate)), source(ptrs, nullptr) {}

 private:
  std::vector<const Checkpoint*> open(const ScratchDir& dir, int k, uint64_t first_seed, int64_t intermediate) {
    std::vector<const Checkpoint*> out;
    for (int i = 0; i < k; ++i) {
      owned.push_back(open_checkpoint(dense(dir, "c" + std::to_string(i), first_seed + uint64_t(i), "llama", intermediate)));
      out.push_back(owned.back().get());
    }
    return out;
  }
};

}  // namespace

TEST_CASE("convert: sparse upcycling of one checkpoint computes the dense model's logits") {
  ScratchDir dir;
  const fs::path a = dense(dir, "a", 1);
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

TEST_CASE("convert: UpIT keeps each checkpoint's FFN, means the shared weights, and a seed repeats byte for byte") {
  ScratchDir dir;
  const fs::path a = dense(dir, "a", 1), b = dense(dir, "b", 2), c = dense(dir, "c", 3);
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
        CHECK(tensor(*moe, tensor_name({expert_role, l, k}, Scheme::HF)) ==
              tensor(*src[size_t(k)], tensor_name({dense_role, l}, Scheme::HF)));
    const std::string q_name = tensor_name({Role::Q, l}, Scheme::HF);
    const auto mean = tensor(*moe, q_name);
    const auto qa = tensor(*src[0], q_name), qb = tensor(*src[1], q_name), qc = tensor(*src[2], q_name);
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
    const fs::path p = dense(dir, "c" + std::to_string(k), uint64_t(10 + k), "llama", 1024);  // 64 KB tensors
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
        std::vector<double> sum(tensor(*src[0], key).size());
        for (const auto& c : src) {
          const auto x = tensor(*c, key);
          for (size_t i = 0; i < x.size(); ++i) sum[i] += x[i];
        }
        std::vector<float> base(sum.size());
        for (size_t i = 0; i < sum.size(); ++i) base[i] = float(sum[i] / 3.0);
        const auto a = tensor(*moe, tensor_name({expert_role, l, pa}, Scheme::HF));
        const auto b = tensor(*moe, tensor_name({expert_role, l, pb}, Scheme::HF));
        const std::span<const float> inputs[] = {a, b};
        std::vector<float> child(a.size());
        merge::merge_tensor(child, inputs, base, dare, key);
        CHECK_MESSAGE(child == tensor(*moe, tensor_name({expert_role, l, int(e)}, Scheme::HF)), key, " expert ", e);
      }
  }
  REQUIRE(grandchild);
}

// The shared weights are merged a block at a time: with blocks of a few elements, DARE (masks by
// element index, base = the checkpoints' mean) gives the bits of one merge of the whole tensors.
TEST_CASE("convert: shared weights merged block by block equal the whole-tensor merge") {
  ScratchDir dir;
  const Sources sources(dir, 3, 30);
  const pool::FfnSource& source = sources.source;
  AssemblyOptions o;
  o.shared_merge = {merge::Method::Dare};
  o.shared_merge.seed = 5;
  o.block_elements = 6;  // tensors of hundreds of elements: many blocks and a ragged last one
  const pool::Pool pool = {{0}, {1}, {2}};
  const auto moe = assemble_moe(source, pool, o);
  for (int l = 0; l < 2; ++l) {
    const std::string name = tensor_name({Role::Q, l}, Scheme::HF);
    std::vector<std::vector<float>> in;
    for (const auto& c : sources.owned) in.push_back(tensor(*c, name));
    const std::span<const float> spans[] = {in[0], in[1], in[2]};
    std::vector<float> base(in[0].size());
    pool::FfnSource::mean(spans, base);
    std::vector<float> whole(in[0].size());
    merge::merge_tensor(whole, spans, base, o.shared_merge, name);
    CHECK(tensor(*moe, name) == whole);
    CHECK(whole != in[0]);
  }
}

// Computed experts are made a block at a time: blocks of 4096 elements (16384-element FFN
// tensors, children of children, re-drawn neurons) give the bits of whole-tensor blocks, for
// ranges asked at any offset too.
TEST_CASE("convert: experts made block by block equal those made whole") {
  ScratchDir dir;
  const Sources sources(dir, 3, 40, 1024);
  const pool::FfnSource& source = sources.source;
  pool::Pool pool = {{0}, {1}, {2}, {-1, 0, 2, 0.3, 0.7, 5}, {-1, 3, 1, 0.6, 0.4, 6}, {1}};
  pool[5].redraw = 0.5;
  pool[5].seed = 7;
  AssemblyOptions blocks, whole;
  whole.block_elements = uint64_t(1) << 40;
  // 256: 64 blocks per expert tensor, more than LayerExperts keeps at a time.
  for (auto [fused, block] : {std::pair{false, 4096}, std::pair{true, 4096}, std::pair{false, 256}}) {
    blocks.fused = whole.fused = fused;
    blocks.block_elements = uint64_t(block);
    const auto a = assemble_moe(source, pool, blocks), b = assemble_moe(source, pool, whole);
    for (const TensorInfo& info : a->tensors()) CHECK_MESSAGE(tensor(*a, info.name) == tensor(*b, info.name), info.name);
    // Written: a's children go out a layer's experts at a time (write_group), b's one by one.
    WriteOptions w;
    w.progress = false;
    write_checkpoint(*assemble_moe(source, pool, blocks), dir / "blocks", w);
    write_checkpoint(*assemble_moe(source, pool, whole), dir / "whole", w);
    const std::string written = read_file(dir / "blocks" / "model.safetensors");
    CHECK(written.size() > 100'000);
    CHECK(written == read_file(dir / "whole" / "model.safetensors"));
    fs::remove_all(dir / "blocks");
    fs::remove_all(dir / "whole");
  }
  blocks.fused = false;
  blocks.block_elements = 4096;
  const auto a = assemble_moe(source, pool, blocks);
  for (int e : {3, 4, 5}) {
    const Tensor t = a->load(tensor_name({Role::ExpertUp, 1, e}, Scheme::HF));
    REQUIRE(t.is_computed());
    const std::vector<float> all = t.to_f32_vector();
    std::vector<float> part(5000);
    t.to_f32_range(4093, part);  // across three blocks, starting and ending inside one
    CHECK(std::equal(part.begin(), part.end(), all.begin() + 4093));
  }
}

TEST_CASE("convert: a pool still being searched: the children wait, the rest is written first, the files the same") {
  ScratchDir dir;
  const Sources sources(dir, 2, 60, 512);
  const pool::FfnSource& source = sources.source;
  const pool::Pool pool = {{0}, {1}, {-1, 0, 1, 0.3, 0.7, 5}};
  WriteOptions w;
  w.progress = false;
  for (bool fused : {false, true}) {
    CAPTURE(fused);
    AssemblyOptions opts;
    opts.fused = fused;
    std::promise<pool::Pool> searched;
    const auto pending = assemble_moe(source, PendingPool{3, {{0}, {1}}, searched.get_future().share()}, opts);
    const std::string child = fused ? tensor_name({Role::ExpertsDown, 0, -1}, Scheme::HFFused) : tensor_name({Role::ExpertDown, 0, 2}, Scheme::HF);
    CHECK(pending->waits(child));
    CHECK_FALSE(pending->waits(tensor_name({Role::Router, 0, -1}, fused ? Scheme::HFFused : Scheme::HF)));
    if (!fused) CHECK_FALSE(pending->waits(tensor_name({Role::ExpertDown, 0, 1}, Scheme::HF)));
    // The search ends while the writer waits on the first child.
    std::thread search([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      searched.set_value(pool);
    });
    write_checkpoint(*pending, dir / "pending", w);
    search.join();
    write_checkpoint(*assemble_moe(source, pool, opts), dir / "known", w);
    CHECK(read_file(dir / "pending" / "model.safetensors") == read_file(dir / "known" / "model.safetensors"));
    fs::remove_all(dir / "pending");
    fs::remove_all(dir / "known");
  }
  // A search that returns another pool than the one announced is refused.
  std::promise<pool::Pool> wrong;
  wrong.set_value({{1}, {0}, {-1, 0, 1, 0.5, 0.5, 1}});
  const auto mismatched = assemble_moe(source, PendingPool{3, {{0}, {1}}, wrong.get_future().share()}, AssemblyOptions{});
  CHECK_THROWS_AS(mismatched->load(tensor_name({Role::ExpertUp, 0, 2}, Scheme::HF)), std::logic_error);
}

TEST_CASE("convert: BTX, drop-upcycling and misuse") {
  ScratchDir dir;
  const fs::path a = dense(dir, "a", 1), b = dense(dir, "b", 2);
  auto r = run_upcycle("convert --checkpoints " + q(a) + " " + q(b) + " --method btx --out " + q(dir / "btx"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(open_checkpoint(dir / "btx")->config().num_local_experts == 2);
  r = run_upcycle("convert --checkpoints " + q(a) + " --method drop --experts 3 --out " + q(dir / "drop"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto drop = open_checkpoint(dir / "drop");
  const auto e0 = tensor(*drop, tensor_name({Role::ExpertGate, 0, 0}, Scheme::HF));
  const auto e1 = tensor(*drop, tensor_name({Role::ExpertGate, 0, 1}, Scheme::HF));
  CHECK(e0 != e1);  // each expert re-draws its own neurons

  r = run_upcycle("convert --checkpoints " + q(a) + " " + q(dense(dir, "m", 3, "mixtral")) + " --router random --out " + q(dir / "o"));
  CHECK(r.code == 2);
  CHECK(r.err.find("already an MoE model") != std::string::npos);
  r = run_upcycle("convert --checkpoints " + q(dense(dir, "qw", 3, "qwen2")) + " --method sparse --top-k 1 --out " + q(dir / "o"));
  CHECK(r.code == 2);
  CHECK(r.err.find("llama or mistral") != std::string::npos);
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
  CHECK(!fs::exists(dir / "o"));
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
  CHECK(tensor(*fitted, router0) != tensor(*random, router0));
  CHECK(tensor(*fitted, tensor_name({Role::Q, 1}, Scheme::HF)) == tensor(*random, tensor_name({Role::Q, 1}, Scheme::HF)));
  // The hidden init: routers from the experts' mean hidden states, no pre-optimisation.
  r = run_upcycle(args + q(dir / "hidden") + " --router hidden");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("router pre-optimisation:") == std::string::npos);
  CHECK(tensor(*open_checkpoint(dir / "hidden"), router0) != tensor(*random, router0));
  // The tokenizer travels: eval reads the MoE with its chat template.
  CHECK(fs::exists(dir / "moe" / "tokenizer.json"));
  r = run_upcycle("eval --model " + q(dir / "moe") + " --data " + q(dir / "data.jsonl"));
  CHECK_MESSAGE(r.code == 0, r.err);
  // Without data, the upit router is a usage error.
  r = run_upcycle("convert --checkpoints " + q(ckpts[0]) + " " + q(ckpts[1]) + " --out " + q(dir / "x"));
  CHECK(r.code == 1);
  CHECK(r.err.find("--seed-data or --data") != std::string::npos);
}

// The way back from load_weights: an assembled MoE's weights, as a checkpoint laid out like it,
// are its tensors again (dtypes of passed-through bf16 FFNs and fused experts included).
TEST_CASE("convert: an MoE's fp32 weights as a checkpoint laid out like it give its tensors back") {
  ScratchDir dir;
  std::vector<std::unique_ptr<Checkpoint>> owned;
  std::vector<const Checkpoint*> ckpts;
  WriteOptions w;
  w.progress = false;
  for (uint64_t k = 0; k < 2; ++k) {
    const fs::path path = dir / ("c" + std::to_string(k));
    write_checkpoint(*random_checkpoint(tiny_config(), 20 + k, DType::BF16), path, w);
    owned.push_back(open_checkpoint(path));
    ckpts.push_back(owned.back().get());
  }
  const pool::FfnSource source(ckpts, nullptr);
  const pool::Pool pool = {{0}, {1}, {-1, 0, 1, 0.5, 0.5, 3}};
  for (bool fused : {false, true}) {
    CAPTURE(fused);
    AssemblyOptions o;
    o.fused = fused;
    if (fused) o.shared_from = 0;  // passed through too: bf16 beside the f32 fused experts
    const auto moe = assemble_moe(source, pool, o, {{"extra.json", [] { return std::optional<std::string>("{}"); }}});
    auto weights = std::make_shared<Weights<float>>(load_weights<float>(*moe));
    const auto view = checkpoint_like(*moe, weights);
    CHECK(view->config().to_json() == moe->config().to_json());
    CHECK(view->side_files() == moe->side_files());
    REQUIRE(view->generated_files().size() == moe->generated_files().size());
    CHECK(view->generated_files().back().name == "extra.json");
    REQUIRE(view->tensors().size() == moe->tensors().size());
    bool bf16 = false;
    for (size_t i = 0; i < moe->tensors().size(); ++i) {
      const TensorInfo& t = moe->tensors()[i];
      CHECK(view->tensors()[i].name == t.name);
      CHECK(view->tensors()[i].dtype == t.dtype);
      CHECK_MESSAGE(same_tensor(view->load(t.name), moe->load(t.name)), t.name);
      bf16 = bf16 || t.dtype == DType::BF16;
    }
    CHECK(bf16);  // the checkpoints' FFNs or shared weights, passed through
    // The view reads the weights as they are when loaded.
    weights->layers[0].router.assign(weights->layers[0].router.size(), 0.25f);
    CHECK(view->load(tensor_name({Role::Router, 0}, fused ? Scheme::HFFused : Scheme::HF)).to_f32_vector() ==
          weights->layers[0].router);
  }
}

// The router stage builds the MoE once: the checkpoints' tensors are read only by the one
// assembly load_weights reads, not by a second one for writing; and what it writes is the MoE
// assembled whole with the routers it fitted.
TEST_CASE("convert: the router stage assembles the MoE once and writes it with the routers it fitted") {
  ScratchDir dir;
  std::vector<std::unique_ptr<Checkpoint>> owned;
  std::atomic<int64_t> loads{0};
  std::vector<std::unique_ptr<CountedLoads>> counted;
  std::vector<const Checkpoint*> ckpts;
  for (int k = 0; k < 2; ++k) {
    fs::create_directories(dir / std::to_string(k));
    owned.push_back(open_checkpoint(write_chat_model(dir / std::to_string(k), "llama", uint64_t(30 + k))));
    counted.push_back(std::make_unique<CountedLoads>(*owned.back(), loads));
    ckpts.push_back(counted.back().get());
  }
  {
    std::ofstream data(dir / "seed.jsonl");
    for (int i = 0; i < 12; ++i)
      data << nlohmann::json{{"instruction", "say " + std::to_string(i)}, {"output", std::string(size_t(2 + i % 4), char('a' + i % 5))}}.dump() << "\n";
  }
  const pool::FfnSource source(ckpts, nullptr);
  const pool::Pool pool = {{0}, {1}, {-1, 0, 1, 0.6, 0.4, 9}};  // a child: merged when assembled
  RouterStageOptions ro;
  ro.data = dir / "seed.jsonl";
  ro.data_is_seed = true;
  ro.text_source = owned[0]->path();
  ro.preopt.epochs = 2;
  ro.preopt.lr = 1e-2;
  ro.preopt.seq_len = 64;
  ro.preopt.progress = false;
  const GeneratedFile extra{"extra.json", [] { return std::optional<std::string>("{\"made\": true}\n"); }};
  for (auto [fused, hidden, dtype] : {std::tuple{false, false, DType::F32}, std::tuple{true, false, DType::BF16},
                                      std::tuple{false, true, DType::F16}}) {
    CAPTURE(fused);
    CAPTURE(hidden);
    AssemblyOptions o;
    o.fused = fused;
    ro.hidden = hidden;
    WriteOptions w;
    w.progress = false;
    w.dtype = dtype;
    const Scheme scheme = fused ? Scheme::HFFused : Scheme::HF;
    loads = 0;
    const auto random = assemble_moe(source, pool, o);
    const Weights<float> random_weights = load_weights<float>(*random);
    const int64_t one_assembly = loads.load();
    REQUIRE(one_assembly > 0);

    loads = 0;
    nlohmann::ordered_json report;
    write_checkpoint(*moe_with_fitted_routers(source, pool, o, ro, report, {extra}), dir / "fitted", w);
    CHECK(loads.load() == one_assembly);
    CHECK(report["seed_samples"] == 12);

    // The routers written are fitted, and the MoE assembled whole with them is the one written.
    const auto written = open_checkpoint(dir / "fitted");
    for (int l = 0; l < 2; ++l) {
      const std::vector<float> router = tensor(*written, tensor_name({Role::Router, l}, scheme));
      const std::vector<float>& start = random_weights.layers[size_t(l)].router;
      CHECK(router != Tensor::from_f32({int64_t(start.size())}, start).to(dtype).to_f32_vector());  // as written
      o.routers.push_back(router);
    }
    write_checkpoint(*assemble_moe(source, pool, o, {extra}), dir / "whole", w);
    for (const char* file : {"model.safetensors", "config.json", "extra.json", "tokenizer.json"})
      CHECK_MESSAGE(read_file(dir / "fitted" / file) == read_file(dir / "whole" / file), file);
    fs::remove_all(dir / "fitted");
    fs::remove_all(dir / "whole");
  }
}

TEST_CASE("convert: the router stage's host memory is counted, and a machine without it is told so up front") {
  ScratchDir dir;
  Sources s(dir, 2, 40);
  const auto moe = assemble_moe(s.source, pool::Pool{{0}, {1}, {0}}, AssemblyOptions{});
  const Checkpoint& dense = s.source.checkpoint(0);
  // What the stage holds: the MoE and one expert's dense model, a float per parameter.
  const uint64_t need = 4 * (moe->parameter_count() + dense.parameter_count());
  ModelConfig c = moe->config(), d = dense.config();
  CHECK(router_stage_bytes(c, d) == need);
  CHECK_NOTHROW(check_router_memory(c, d, need, "ckpt/c0"));
  try {
    check_router_memory(c, d, need - 1, "ckpt/c0");
    FAIL("no error");
  } catch (const InputError& e) {
    const std::string what = e.what();
    CHECK(what.find("ckpt/c0") != std::string::npos);
    CHECK(what.find("router stage") != std::string::npos);
    CHECK(what.find("--router random") != std::string::npos);
  }
  // A tied head: one V x H matrix fewer in each model.
  c.tie_word_embeddings = d.tie_word_embeddings = true;
  CHECK(router_stage_bytes(c, d) == need - 2 * 4 * uint64_t(c.vocab_size * c.hidden_size));
}

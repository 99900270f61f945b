// The conversion as a library on tiny llama checkpoints: computed tensors made block by block
// equal whole ones, a pool still being searched writes the same files, the router stage
// assembles the MoE once and writes it with the routers it fitted, and counts its memory.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <thread>
#include <tuple>

#include "convert/assemble.hpp"
#include "convert/router_stage.hpp"
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
      owned.push_back(open_checkpoint(write_dense(dir, "c" + std::to_string(i), first_seed + uint64_t(i), "llama", intermediate)));
      out.push_back(owned.back().get());
    }
    return out;
  }
};

}  // namespace

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
    for (const auto& c : sources.owned) in.push_back(tensor_values(*c, name));
    const std::span<const float> spans[] = {in[0], in[1], in[2]};
    std::vector<float> base(in[0].size());
    pool::FfnSource::mean(spans, base);
    std::vector<float> whole(in[0].size());
    merge::merge_tensor(whole, spans, base, o.shared_merge, name);
    CHECK(tensor_values(*moe, name) == whole);
    CHECK(whole != in[0]);
  }
}

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
    for (const TensorInfo& info : a->tensors()) CHECK_MESSAGE(tensor_values(*a, info.name) == tensor_values(*b, info.name), info.name);
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
  ro.seq_len = 64;
  ro.preopt.progress = false;
  ro.scratch = dir / "scratch";
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
    const TokenizedData seed = read_seed_data(ro, owned[0]->config());
    ro.scratch_dtype = dtype;
    write_checkpoint(*moe_with_fitted_routers(source, pool, o, ro, seed, report, {extra}), dir / "fitted", w);
    CHECK(loads.load() == one_assembly);
    CHECK(report["seed_samples"] == 12);
    for (const auto& entry : fs::directory_iterator(dir.path()))  // the scratch copy is gone
      CHECK_MESSAGE(entry.path().filename().string().find("scratch") == std::string::npos, entry.path());

    // In bf16 the seed samples go to the same experts.
    nlohmann::ordered_json bf16_report;
    ro.precision = Precision::BF16;
    moe_with_fitted_routers(source, pool, o, ro, seed, bf16_report, {extra});
    ro.precision = Precision::F32;
    CHECK(bf16_report["seed_experts"] == report["seed_experts"]);
    CHECK(bf16_report["seed_experts"].size() == 12);

    // The routers written are fitted, and the MoE assembled whole with them is the one written.
    const auto written = open_checkpoint(dir / "fitted");
    for (int l = 0; l < 2; ++l) {
      const std::vector<float> router = tensor_values(*written, tensor_name({Role::Router, l}, scheme));
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

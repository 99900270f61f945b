// init, export and inspect through every format, as a user runs them: round trips bit exact,
// the same seed byte-identical, outputs never half-written, the real SmolLM2 GGUF read right.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/checkpoint.hpp"
#include "formats/open_checkpoint.hpp"
#include "tests/common/fixtures.hpp"
#include "text/tokenizer.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

// A small config file of a model type, written into dir.
fs::path write_config(const ScratchDir& dir, const std::string& model_type, bool tied = false) {
  fs::path p = dir / (model_type + "-config.json");
  write_file(p, tiny_config(model_type, tied).to_json().dump(2));
  return p;
}

nlohmann::json inspect_json(const fs::path& p) {
  auto r = run_upcycle("inspect --json " + q(p));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  return nlohmann::json::parse(r.out);
}

// Every tensor of a equals b's of the same name, bit for bit, after converting a to b's dtype.
void check_same_tensors(const Checkpoint& a, const Checkpoint& b) {
  REQUIRE(a.tensors().size() == b.tensors().size());
  for (const auto& info : a.tensors()) {
    REQUIRE_MESSAGE(b.find(info.name), info.name);
    Tensor tb = b.load(info.name);
    CHECK_MESSAGE(same_tensor(a.load(info.name).to(tb.dtype()), tb), info.name);
  }
}

// The folder's tokenizer.json encodes llama.cpp's test strings and a chat as the GGUF does, and
// tokenizer_config.json carries SmolLM2's special tokens and chat template.
void check_exported_tokenizer(const fs::path& gguf, const fs::path& folder) {
  auto want = load_tokenizer(gguf), got = load_tokenizer(folder / "tokenizer.json");
  REQUIRE(got->vocab_size() == want->vocab_size());
  CHECK(got->bos_id() == want->bos_id());
  CHECK(got->eos_id() == want->eos_id());
  std::vector<std::string> strings = {"<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"};
  if (auto dir = shared_tokenizers())
    for (std::string& s : vocab_test_strings(*dir / "ggml-vocab-gpt-2.gguf.inp")) strings.push_back(std::move(s));
  for (const std::string& s : strings) CHECK_MESSAGE(got->encode(s) == want->encode(s), s);

  auto config = nlohmann::json::parse(read_file(folder / "tokenizer_config.json"));
  CHECK(config["bos_token"] == "<|im_start|>");
  CHECK(config["eos_token"] == "<|im_end|>");
  CHECK(config["chat_template"].get<std::string>().find("<|im_start|>") != std::string::npos);
  CHECK(config["model_max_length"] == 8192);
  auto generation = nlohmann::json::parse(read_file(folder / "generation_config.json"));
  CHECK(generation["eos_token_id"] == *want->eos_id());
}

}  // namespace

TEST_CASE("init then export through HF folder, sharded folder and HDF5: bit exact") {
  ScratchDir dir;
  for (const char* type : {"llama", "qwen2", "mixtral"}) {
    CAPTURE(type);
    fs::path hf = dir / (std::string(type) + "-hf");
    auto r = run_upcycle("init -q --config " + q(write_config(dir, type)) + " --seed 7 --out " + q(hf));
    REQUIRE_MESSAGE(r.code == 0, r.err);
    auto j = inspect_json(hf);
    CHECK(j["model_type"] == type);
    CHECK(j["layers"] == 2);
    CHECK(j["hidden_size"] == 16);
    CHECK(j["vocab_size"] == 40);
    CHECK(j["experts"] == (std::string(type) == "mixtral" ? 4 : 0));
    CHECK(j["dtype"] == "f32");

    fs::path h5 = dir / (std::string(type) + ".h5"), sharded = dir / (std::string(type) + "-sharded"),
             back = dir / (std::string(type) + "-back");
    REQUIRE(run_upcycle("export -q " + q(hf) + " " + q(h5)).code == 0);
    REQUIRE(run_upcycle("export -q " + q(h5) + " " + q(sharded) + " --shard-size 3kB").code == 0);
    REQUIRE(run_upcycle("export -q " + q(sharded) + " " + q(back)).code == 0);
    CHECK(fs::exists(sharded / "model.safetensors.index.json"));
    int shards = 0;
    for (const auto& e : fs::directory_iterator(sharded)) shards += e.path().extension() == ".safetensors";
    CHECK(shards >= 3);
    CHECK(inspect_json(sharded)["params"] == j["params"]);

    auto a = open_checkpoint(hf), b = open_checkpoint(back), c = open_checkpoint(h5);
    check_same_tensors(*a, *b);
    check_same_tensors(*a, *c);
    CHECK(b->config().to_json() == a->config().to_json());
    CHECK(read_file(back / "model.safetensors") == read_file(hf / "model.safetensors"));
  }
}

TEST_CASE("dtype conversion on export and on init") {
  ScratchDir dir;
  fs::path cfg = write_config(dir, "llama");
  REQUIRE(run_upcycle("init -q --config " + q(cfg) + " --out " + q(dir / "f32")).code == 0);
  REQUIRE(run_upcycle("export -q " + q(dir / "f32") + " " + q(dir / "bf16") + " --dtype bf16").code == 0);
  REQUIRE(run_upcycle("export -q " + q(dir / "f32") + " " + q(dir / "f16.h5") + " --dtype f16").code == 0);
  CHECK(inspect_json(dir / "bf16")["dtype"] == "bf16");
  CHECK(inspect_json(dir / "f16.h5")["dtype"] == "f16");
  CHECK(inspect_json(dir / "bf16")["bytes"].get<int64_t>() * 2 == inspect_json(dir / "f32")["bytes"].get<int64_t>());
  auto f32 = open_checkpoint(dir / "f32"), bf16 = open_checkpoint(dir / "bf16");
  check_same_tensors(*f32, *bf16);  // f32 converted to bf16 in memory equals the file's bf16
  REQUIRE(run_upcycle("init -q --config " + q(cfg) + " --out " + q(dir / "direct-bf16") + " --dtype bf16").code == 0);
  CHECK(read_file(dir / "direct-bf16" / "model.safetensors") == read_file(dir / "bf16" / "model.safetensors"));
}

TEST_CASE("a fixed seed gives byte-identical files, another seed does not") {
  ScratchDir dir;
  fs::path cfg = write_config(dir, "mixtral");
  for (const char* name : {"a", "b"})
    REQUIRE(run_upcycle("init -q --config " + q(cfg) + " --seed 3 --out " + q(dir / name)).code == 0);
  REQUIRE(run_upcycle("init -q --config " + q(cfg) + " --seed 4 --out " + q(dir / "c")).code == 0);
  CHECK(read_file(dir / "a" / "model.safetensors") == read_file(dir / "b" / "model.safetensors"));
  CHECK(read_file(dir / "a" / "model.safetensors") != read_file(dir / "c" / "model.safetensors"));
  CHECK(read_file(dir / "a" / "config.json") == read_file(dir / "b" / "config.json"));
  REQUIRE(run_upcycle("export -q " + q(dir / "a") + " " + q(dir / "a1.h5")).code == 0);
  REQUIRE(run_upcycle("export -q " + q(dir / "a") + " " + q(dir / "a2.h5")).code == 0);
  CHECK(read_file(dir / "a1.h5") == read_file(dir / "a2.h5"));
}

TEST_CASE("an existing output is refused and left untouched, --overwrite replaces it") {
  ScratchDir dir;
  fs::path cfg = write_config(dir, "llama");
  REQUIRE(run_upcycle("init -q --config " + q(cfg) + " --out " + q(dir / "m")).code == 0);
  fs::create_directories(dir / "out");
  write_file(dir / "out" / "keep.txt", "precious");
  auto r = run_upcycle("export -q " + q(dir / "m") + " " + q(dir / "out"));
  CHECK(r.code == 2);
  CHECK(r.err.find("already exists") != std::string::npos);
  CHECK(read_file(dir / "out" / "keep.txt") == "precious");
  REQUIRE(run_upcycle("export -q " + q(dir / "m") + " " + q(dir / "out") + " --overwrite").code == 0);
  CHECK_FALSE(fs::exists(dir / "out" / "keep.txt"));
  CHECK(fs::exists(dir / "out" / "model.safetensors"));
  // No temporaries left beside the outputs.
  for (const auto& e : fs::directory_iterator(dir.path()))
    CHECK_MESSAGE(e.path().filename().string().find(".partial") == std::string::npos, e.path().string());
}

TEST_CASE("SmolLM2-135M-Instruct GGUF: inspect, export to a Hugging Face folder, read back") {
  auto gguf = smollm2_gguf();
  if (!gguf) {
    MESSAGE("skipped: SmolLM2 GGUF not fetched (scripts/fetch-smollm2.sh)");
    return;
  }
  auto j = inspect_json(*gguf);
  CHECK(j["model_type"] == "llama");
  CHECK(j["layers"] == 30);
  CHECK(j["hidden_size"] == 576);
  CHECK(j["attention_heads"] == 9);
  CHECK(j["kv_heads"] == 3);
  CHECK(j["vocab_size"] == 49152);
  CHECK(j["intermediate_size"] == 1536);
  CHECK(j["tie_word_embeddings"] == true);
  ScratchDir dir;
  auto r = run_upcycle("export -q " + q(*gguf) + " " + q(dir / "hf"));
  REQUIRE_MESSAGE(r.code == 0, r.err);
  auto back = inspect_json(dir / "hf");
  for (const char* key : {"model_type", "layers", "hidden_size", "intermediate_size", "attention_heads", "kv_heads",
                          "head_dim", "vocab_size", "tie_word_embeddings", "rope_theta", "params", "tensors"})
    CHECK_MESSAGE(back[key] == j[key], key);
  CHECK(back["dtype"] == "f32");
  auto a = open_checkpoint(*gguf), b = open_checkpoint(dir / "hf");
  check_same_tensors(*a, *b);
  check_exported_tokenizer(*gguf, dir / "hf");
}

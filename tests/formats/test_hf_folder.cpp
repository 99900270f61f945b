// Hugging Face model folders: writing (single file, shards, dtypes, side files, all or nothing)
// and reading back, and malformed folders refused naming the file and the problem.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/hf_folder.hpp"
#include "formats/open_checkpoint.hpp"
#include "formats/safetensors.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

WriteOptions quiet(uint64_t shard_bytes = 5'000'000'000) {
  WriteOptions opts;
  opts.progress = false;
  opts.shard_bytes = shard_bytes;
  return opts;
}

json read_json(const fs::path& path) { return json::parse(test::read_file(path)); }
void write_json(const fs::path& path, const json& j) { test::write_file(path, j.dump(2)); }

// Every tensor of `want` is in `have`, bit for bit, and nothing else is.
void check_same_tensors(const Checkpoint& have, const Checkpoint& want) {
  CHECK(have.tensors().size() == want.tensors().size());
  for (const TensorInfo& t : want.tensors()) {
    CAPTURE(t.name);
    REQUIRE(have.find(t.name) != nullptr);
    CHECK(test::same_tensor(have.load(t.name), want.load(t.name)));
  }
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A checkpoint like `base` with one tensor dropped, or with one tensor's shape replaced.
std::unique_ptr<Checkpoint> edited(const Checkpoint& base, const std::string& name, std::optional<Shape> shape) {
  std::vector<TensorInfo> infos;
  for (TensorInfo t : base.tensors()) {
    if (t.name == name && !shape) continue;
    if (t.name == name) t.shape = *shape;
    infos.push_back(t);
  }
  auto loader = [&base](const TensorInfo& t) {
    Tensor have = base.load(t.name);
    return have.shape() == t.shape ? have : Tensor::zeros(t.dtype, t.shape);
  };
  return std::make_unique<ComputedCheckpoint>(base.config(), infos, loader);
}

std::vector<std::string> folder_listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("hf folder: f32 round trip, single file, config kept with torch_dtype") {
  test::ScratchDir dir;
  auto model = test::random_checkpoint(test::tiny_config("llama"), 7);
  write_hf_folder(*model, dir / "out", quiet());
  CHECK(folder_listing(dir / "out") == std::vector<std::string>{"config.json", "model.safetensors"});

  auto back = open_checkpoint(dir / "out");
  CHECK(back->format() == "safetensors");
  CHECK(back->path() == dir / "out");
  check_same_tensors(*back, *model);
  CHECK(back->config().hidden_size == 16);

  const std::string text = test::read_file(dir / "out" / "config.json");
  CHECK(contains(text, "\n  \"model_type\": \"llama\""));  // pretty printed, indent 2
  json config = json::parse(text);
  CHECK(config["torch_dtype"] == "float32");
  CHECK(config["an_unknown_field"]["kept"] == true);
  CHECK(config["bos_token_id"] == 1);

  // Canonical order in the file: the embedding first, the head last.
  SafetensorsFile f = SafetensorsFile::open(dir / "out" / "model.safetensors");
  CHECK(f.entries().front().info.name == "model.embed_tokens.weight");
  CHECK(f.entries().back().info.name == "lm_head.weight");
  CHECK(f.metadata().at("format") == "pt");
}

TEST_CASE("hf folder: bf16 and f16 round trip bit exact, --dtype converts on write") {
  test::ScratchDir dir;
  for (DType dtype : {DType::BF16, DType::F16}) {
    auto model = test::random_checkpoint(test::tiny_config("mixtral"), 3, dtype);
    const fs::path out = dir / std::string(dtype_name(dtype));
    write_hf_folder(*model, out, quiet());
    auto back = open_checkpoint(out);
    check_same_tensors(*back, *model);
    CHECK(back->config().num_local_experts == 4);
    CHECK(read_json(out / "config.json")["torch_dtype"] == (dtype == DType::BF16 ? "bfloat16" : "float16"));
  }

  auto model = test::random_checkpoint(test::tiny_config("llama"), 5);
  WriteOptions opts = quiet();
  opts.dtype = DType::BF16;
  write_hf_folder(*model, dir / "converted", opts);
  auto back = open_checkpoint(dir / "converted");
  for (const TensorInfo& t : model->tensors()) {
    CAPTURE(t.name);
    CHECK(back->find(t.name)->dtype == DType::BF16);
    CHECK(test::same_tensor(back->load(t.name), model->load(t.name).to(DType::BF16)));
  }
  CHECK(read_json(dir / "converted" / "config.json")["torch_dtype"] == "bfloat16");
}

TEST_CASE("hf folder: sharding fills shards greedily and the index lists every tensor") {
  test::ScratchDir dir;
  auto model = test::random_checkpoint(test::tiny_config("llama"), 11);
  const uint64_t limit = 2000;  // embeddings and head (2560 bytes each) exceed it
  write_hf_folder(*model, dir / "out", quiet(limit));
  CHECK_FALSE(fs::exists(dir / "out" / "model.safetensors"));

  json index = read_json(dir / "out" / "model.safetensors.index.json");
  const json& map = index["weight_map"];
  CHECK(map.size() == model->tensors().size());
  std::vector<std::string> keys;
  for (const auto& [name, file] : map.items()) keys.push_back(name);
  CHECK(std::is_sorted(keys.begin(), keys.end()));

  std::set<std::string> files;
  for (const auto& [name, file] : map.items()) files.insert(file.get<std::string>());
  const size_t k = files.size();
  CHECK(k > 5);
  char last[64];
  std::snprintf(last, sizeof last, "model-%05zu-of-%05zu.safetensors", k, k);
  CHECK(*files.rbegin() == last);
  CHECK(*files.begin() == "model-00001-of-" + std::string(last).substr(15));

  uint64_t total = 0;
  for (const std::string& file : files) {
    CAPTURE(file);
    SafetensorsFile shard = SafetensorsFile::open(dir / "out" / file);
    const uint64_t size = fs::file_size(dir / "out" / file);
    CHECK((size <= limit || shard.entries().size() == 1));  // only a lone tensor may exceed it
    for (const SafetensorsEntry& e : shard.entries()) {
      CHECK(map.at(e.info.name) == file);
      total += e.nbytes;
    }
  }
  CHECK(index["metadata"]["total_size"] == total);
  CHECK(total == model->stored_bytes());
  // The embedding is first in canonical order and alone in the first shard.
  CHECK(SafetensorsFile::open(dir / "out" / *files.begin()).entries().size() == 1);
  CHECK(map["model.embed_tokens.weight"] == *files.begin());

  check_same_tensors(*open_checkpoint(dir / "out"), *model);

  // A limit the whole file fits in gives one model.safetensors.
  const uint64_t whole = fs::file_size(dir / "out" / *files.begin()) + 100'000;
  write_hf_folder(*model, dir / "one", quiet(whole));
  CHECK(folder_listing(dir / "one") == std::vector<std::string>{"config.json", "model.safetensors"});
}

TEST_CASE("hf folder: side files are found and copied, others are not") {
  test::ScratchDir dir;
  write_hf_folder(*test::random_checkpoint(test::tiny_config("llama"), 1), dir / "src", quiet());
  test::write_file(dir / "src" / "tokenizer.json", R"({"model":{}})");
  test::write_file(dir / "src" / "generation_config.json", R"({"do_sample":true})");
  test::write_file(dir / "src" / "chat_template.jinja", "{{ messages }}");
  test::write_file(dir / "src" / "notes.txt", "not a side file");

  auto in = open_checkpoint(dir / "src");
  CHECK(in->side_files().size() == 3);
  CHECK(find_side_files(dir / "src").size() == 3);
  write_hf_folder(*in, dir / "dst", quiet());
  CHECK(folder_listing(dir / "dst") == std::vector<std::string>{"chat_template.jinja", "config.json",
                                                                "generation_config.json", "model.safetensors",
                                                                "tokenizer.json"});
  CHECK(test::read_file(dir / "dst" / "tokenizer.json") == R"({"model":{}})");
  CHECK(test::read_file(dir / "dst" / "chat_template.jinja") == "{{ messages }}");
  check_same_tensors(*open_checkpoint(dir / "dst"), *in);
}

TEST_CASE("hf folder: a writer failing midway leaves nothing behind and the old output intact") {
  test::ScratchDir dir;
  auto good = test::random_checkpoint(test::tiny_config("llama"), 1);
  auto source = test::random_checkpoint(test::tiny_config("llama"), 2);
  int loads = 0;
  ComputedCheckpoint failing(source->config(), source->tensors(), [&](const TensorInfo& t) {
    if (++loads == 3) throw InputError("source", "tensor '" + t.name + "'", "read failed");
    return source->load(t.name);
  });

  CHECK(contains(error_of([&] { write_hf_folder(failing, dir / "fresh", quiet()); }), "read failed"));
  CHECK(fs::is_empty(dir.path()));

  write_hf_folder(*good, dir / "out", quiet());
  loads = 0;
  WriteOptions replace = quiet(3000);
  replace.overwrite = true;
  CHECK(contains(error_of([&] { write_hf_folder(failing, dir / "out", replace); }), "read failed"));
  CHECK(folder_listing(dir.path()) == std::vector<std::string>{"out"});
  check_same_tensors(*open_checkpoint(dir / "out"), *good);
}

TEST_CASE("hf folder: an existing output is refused unless overwriting") {
  test::ScratchDir dir;
  auto first = test::random_checkpoint(test::tiny_config("llama"), 1);
  auto second = test::random_checkpoint(test::tiny_config("llama"), 2);
  write_hf_folder(*first, dir / "out", quiet());
  CHECK(contains(error_of([&] { write_hf_folder(*second, dir / "out", quiet()); }), "already exists"));
  check_same_tensors(*open_checkpoint(dir / "out"), *first);
  WriteOptions opts = quiet();
  opts.overwrite = true;
  write_hf_folder(*second, dir / "out", opts);
  check_same_tensors(*open_checkpoint(dir / "out"), *second);
}

TEST_CASE("hf folder: tensor names safetensors cannot hold are refused before anything is written") {
  test::ScratchDir dir;
  auto model = test::random_checkpoint(test::tiny_config("llama"), 6);
  for (const auto& [name, needle] : {std::pair<std::string, std::string>{"bad\xff", "name is not valid UTF-8"},
                                     {"__metadata__", "name is reserved by safetensors"}}) {
    std::vector<TensorInfo> infos = model->tensors();
    infos.push_back({name, DType::F32, {1}});
    ComputedCheckpoint odd(model->config(), infos, [](const TensorInfo& t) { return Tensor::zeros(t.dtype, t.shape); });
    const std::string message = error_of([&] { write_hf_folder(odd, dir / "out", quiet()); });
    CAPTURE(message);
    CHECK(contains(message, "tensor '" + name + "': " + needle));
    CHECK(fs::is_empty(dir.path()));
  }
}

TEST_CASE("hf folder: malformed folders are refused naming the file and the problem") {
  test::ScratchDir dir;
  auto model = test::random_checkpoint(test::tiny_config("llama"), 4);
  write_hf_folder(*model, dir / "single", quiet());
  write_hf_folder(*model, dir / "sharded", quiet(6000));
  const json index = read_json(dir / "sharded" / "model.safetensors.index.json");
  const std::string first_shard = index["weight_map"]["model.embed_tokens.weight"];
  const std::string last_shard = index["weight_map"]["lm_head.weight"];
  REQUIRE(first_shard != last_shard);

  int n = 0;
  // A copy of a folder, edited, then opened: the message must name `file` and hold `needle`.
  auto expect = [&](const fs::path& base, const std::function<void(const fs::path&)>& edit, const std::string& file,
                    const std::string& needle) {
    const fs::path copy = dir / ("case" + std::to_string(n++));
    fs::copy(base, copy);
    edit(copy);
    const std::string message = error_of([&] { open_checkpoint(copy); });
    CAPTURE(needle);
    CAPTURE(message);
    CHECK(contains(message, (file.empty() ? copy : copy / file).string() + ": "));
    CHECK(contains(message, needle));
  };
  auto edit_index = [](const std::function<void(json&)>& change) {
    return [change](const fs::path& folder) {
      json j = read_json(folder / "model.safetensors.index.json");
      change(j);
      write_json(folder / "model.safetensors.index.json", j);
    };
  };
  const fs::path single = dir / "single", sharded = dir / "sharded";
  const std::string idx = "model.safetensors.index.json";

  expect(single, [](const fs::path& f) { fs::remove(f / "config.json"); }, "", "no config.json in the model folder");
  expect(single, [](const fs::path& f) { test::write_file(f / "config.json", "{\"vocab_size\": 4"); }, "config.json",
         "not valid JSON");
  expect(single, [](const fs::path& f) { fs::remove(f / "model.safetensors"); }, "",
         "holds neither model.safetensors nor model.safetensors.index.json");
  expect(single, [](const fs::path& f) { fs::rename(f / "model.safetensors", f / "pytorch_model.bin"); }, "",
         "holds pytorch_model.bin but no safetensors weights: a folder is read only from safetensors");
  expect(single, [](const fs::path& f) { test::write_file(f / "model.safetensors", "1234"); }, "model.safetensors",
         "shorter than the 8-byte header length");

  expect(sharded, [&](const fs::path& f) { test::write_file(f / idx, "{\"weight_map\": "); }, idx, "not valid JSON");
  expect(sharded, [&](const fs::path& f) { test::write_file(f / idx, "[]"); }, idx, "not a JSON object");
  expect(sharded, edit_index([](json& j) { j.erase("weight_map"); }), idx, "'weight_map' is missing");
  expect(sharded, edit_index([](json& j) { j["weight_map"] = json::array({"a"}); }), idx,
         "weight_map: must be an object");
  expect(sharded, edit_index([](json& j) { j["weight_map"] = json::object(); }), idx, "weight_map: lists no tensors");
  expect(sharded, edit_index([](json& j) { j["metadata"] = 5; }), idx, "metadata: must be an object");
  expect(sharded, edit_index([](json& j) { j["weight_map"]["model.norm.weight"] = 3; }), idx,
         "weight_map 'model.norm.weight': shard must be a string");
  expect(sharded, [&](const fs::path& f) { fs::remove(f / last_shard); }, idx,
         "shard '" + last_shard + "' does not exist");
  expect(sharded, edit_index([](json& j) { j["weight_map"]["model.norm.weight"] = "../x.safetensors"; }), idx,
         "shard '../x.safetensors' is not a plain file name inside the folder");
  expect(sharded, edit_index([](json& j) { j["weight_map"]["model.norm.weight"] = "/etc/passwd"; }), idx,
         "shard '/etc/passwd' is not a plain file name inside the folder");
  expect(sharded, edit_index([](json& j) { j["weight_map"]["model.norm.weight"] = ".."; }), idx,
         "is not a plain file name");
  expect(
      sharded,
      [&](const fs::path& f) {
        fs::rename(f / last_shard, dir / "outside.safetensors");
        fs::create_symlink(dir / "outside.safetensors", f / last_shard);
      },
      last_shard, "is a symlink that leads outside the model folder");
  expect(sharded, edit_index([](json& j) { j["weight_map"]["model.extra.weight"] = j["weight_map"]["lm_head.weight"]; }),
         last_shard, "tensor 'model.extra.weight': listed in the index but absent from the shard");
  const std::string q0 = "model.layers.0.self_attn.q_proj.weight";
  REQUIRE(index["weight_map"][q0] == first_shard);
  expect(sharded, edit_index([&](json& j) { j["weight_map"].erase(q0); }), first_shard,
         "tensor '" + q0 + "': is in the shard but not in model.safetensors.index.json");
  expect(sharded, edit_index([&](json& j) { j["weight_map"][q0] = last_shard; }), first_shard,
         "tensor '" + q0 + "': is in this shard but the index places it in '" + last_shard + "'");

  // Tensors against the config (open_checkpoint's check).
  write_hf_folder(*edited(*model, "model.norm.weight", std::nullopt), dir / "missing", quiet());
  CHECK(contains(error_of([&] { open_checkpoint(dir / "missing"); }),
                 (dir / "missing").string() + ": tensor 'model.norm.weight': required by the config but missing"));
  write_hf_folder(*edited(*model, "model.layers.1.self_attn.k_proj.weight", Shape{8, 15}), dir / "misshapen", quiet());
  CHECK(contains(error_of([&] { open_checkpoint(dir / "misshapen"); }),
                 "tensor 'model.layers.1.self_attn.k_proj.weight': shape [8, 15] but the config implies [8, 16]"));
  // Tensors the config does not account for are refused, not dropped.
  auto edit_config = [](const std::function<void(json&)>& change) {
    return [change](const fs::path& folder) {
      json j = read_json(folder / "config.json");
      change(j);
      write_json(folder / "config.json", j);
    };
  };
  expect(single, edit_config([](json& j) { j["num_hidden_layers"] = 1; }), "",
         "9 tensor(s) the config does not account for (1 layers), which a model built from it would ignore: "
         "'model.layers.1.input_layernorm.weight'");
  expect(single, edit_config([](json& j) { j["tie_word_embeddings"] = true; }), "",
         "1 tensor(s) the config does not account for (2 layers, output tied to the embeddings), which a model "
         "built from it would ignore: 'lm_head.weight'");
  std::vector<TensorInfo> extra = model->tensors();
  extra.push_back({"model.layers.0.mlp.extra.weight", DType::F32, {2}});
  write_hf_folder(ComputedCheckpoint(model->config(), extra,
                                     [&](const TensorInfo& t) {
                                       return t.shape == Shape{2} ? Tensor::zeros(DType::F32, t.shape) : model->load(t.name);
                                     }),
                  dir / "extra", quiet());
  CHECK(contains(error_of([&] { open_checkpoint(dir / "extra"); }), "ignore: 'model.layers.0.mlp.extra.weight'"));
}

TEST_CASE("hf folder: a Hugging Face hub cache snapshot (symlinks into blobs) opens") {
  test::ScratchDir dir;
  auto model = test::random_checkpoint(test::tiny_config("llama"), 9);
  write_hf_folder(*model, dir / "plain", quiet(8000));
  const fs::path repo = dir / "models--org--tiny", blobs = repo / "blobs", snapshot = repo / "snapshots" / "abc123";
  fs::create_directories(blobs);
  fs::create_directories(snapshot);
  int i = 0;
  for (const std::string& name : folder_listing(dir / "plain")) {
    const std::string blob = "blob" + std::to_string(i++);
    fs::rename(dir / "plain" / name, blobs / blob);
    fs::create_symlink(fs::path("../../blobs") / blob, snapshot / name);
  }
  auto back = open_checkpoint(snapshot);
  check_same_tensors(*back, *model);
}

TEST_CASE("hf folder: tensors that wait are loaded after all the others of their shard, and land in place") {
  test::ScratchDir dir;
  auto model = test::random_checkpoint(test::tiny_config("llama"), 12);
  std::vector<std::string> loaded;
  auto waits = [](const std::string& name) { return name.find("mlp") != std::string::npos; };
  const ComputedCheckpoint waiting(
      model->config(), model->tensors(),
      [&](const TensorInfo& info) {
        loaded.push_back(info.name);
        return model->load(info.name);
      },
      {}, {}, waits);
  for (uint64_t limit : {uint64_t(1) << 30, uint64_t(6000)}) {  // one shard, then several
    CAPTURE(limit);
    loaded.clear();
    write_hf_folder(waiting, dir / "waited", quiet(limit));
    write_hf_folder(*model, dir / "plain", quiet(limit));
    // Per shard, every waiting tensor after every other one.
    const json index = limit > 1000000 ? json() : read_json(dir / "plain" / "model.safetensors.index.json");
    auto shard_of = [&](const std::string& name) { return index.is_null() ? std::string() : index["weight_map"][name].get<std::string>(); };
    REQUIRE(loaded.size() == model->tensors().size());
    size_t waited = 0;
    for (size_t i = 0; i < loaded.size(); ++i)
      for (size_t j = i + 1; j < loaded.size(); ++j)
        if (shard_of(loaded[i]) == shard_of(loaded[j]) && waits(loaded[i])) waited += waits(loaded[j]) ? 0 : 1;
    CHECK(waited == 0);
    CHECK(std::count_if(loaded.begin(), loaded.end(), waits) > 0);
    // The same files, byte for byte.
    for (const auto& entry : fs::directory_iterator(dir / "plain"))
      CHECK(test::read_file(entry.path()) == test::read_file(dir / "waited" / entry.path().filename()));
    fs::remove_all(dir / "waited");
    fs::remove_all(dir / "plain");
  }
}

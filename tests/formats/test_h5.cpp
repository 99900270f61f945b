// HDF5 checkpoints: round trips through the writer and reader, the documented layout as seen
// through the HDF5 C API, files made by hand, and malformed files (built with the C API, never
// with the writer) that must fail with an InputError naming the file and the problem.
#include <doctest/doctest.h>
#include <hdf5.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <thread>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/h5.hpp"
#include "formats/open_checkpoint.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

// libhdf5 1.10 leaks an object header whenever one fails its checksum (fixed in later releases),
// which the corruption tests cause on purpose. LeakSanitizer reads this hook in sanitized builds.
extern "C" const char* __lsan_default_suppressions() { return "leak:libhdf5\n"; }

namespace {

// Owns one HDF5 id in the test (the library's own handle type is private to formats/h5_common.hpp).
class H5 {
 public:
  explicit H5(hid_t id) : id_(id) { REQUIRE(id >= 0); }
  ~H5() {
    switch (H5Iget_type(id_)) {
      case H5I_FILE: H5Fclose(id_); break;
      case H5I_GROUP: H5Gclose(id_); break;
      case H5I_DATASET: H5Dclose(id_); break;
      case H5I_ATTR: H5Aclose(id_); break;
      case H5I_DATASPACE: H5Sclose(id_); break;
      case H5I_DATATYPE: H5Tclose(id_); break;
      default: H5Pclose(id_); break;
    }
  }
  H5(const H5&) = delete;
  H5& operator=(const H5&) = delete;
  hid_t operator*() const { return id_; }

 private:
  hid_t id_;
};

WriteOptions quiet(std::optional<DType> dtype = std::nullopt) {
  WriteOptions opts;
  opts.progress = false;
  opts.dtype = dtype;
  return opts;
}

std::vector<std::string> names_of(const Checkpoint& c) {
  std::vector<std::string> names;
  for (const auto& t : c.tensors()) names.push_back(t.name);
  return names;
}

std::vector<std::string> canonical_names(const Checkpoint& c) {
  const std::vector<std::string> names = names_of(c);
  std::vector<std::string> ordered;
  for (size_t i : canonical_order(names)) ordered.push_back(names[i]);
  return ordered;
}

// Runs f, which must throw an InputError naming `file` whose message contains `needle`.
void expect_input_error(const std::function<void()>& f, const fs::path& file, const std::string& needle) {
  try {
    f();
    FAIL("accepted; expected an error containing: " << needle);
  } catch (const InputError& e) {
    const std::string message = e.what();
    CHECK_MESSAGE(e.file() == file.string(), message);
    CHECK_MESSAGE(message.find(needle) != std::string::npos, message);
  }
}

// ---- Files built by hand with the C API -----------------------------------------------------

void string_attribute(hid_t obj, const char* name, const std::string& value) {
  H5 type(H5Tcopy(H5T_C_S1));
  H5Tset_size(*type, H5T_VARIABLE);
  H5Tset_cset(*type, H5T_CSET_UTF8);
  H5 space(H5Screate(H5S_SCALAR));
  H5 attr(H5Acreate2(obj, name, *type, *space, H5P_DEFAULT, H5P_DEFAULT));
  const char* text = value.c_str();
  REQUIRE(H5Awrite(*attr, *type, &text) >= 0);
}

// As numpy's bytes_ would store it: fixed length, NUL padded.
void fixed_string_attribute(hid_t obj, const char* name, const std::string& value) {
  H5 type(H5Tcopy(H5T_C_S1));
  H5Tset_size(*type, value.size() + 3);
  H5Tset_strpad(*type, H5T_STR_NULLPAD);
  H5 space(H5Screate(H5S_SCALAR));
  H5 attr(H5Acreate2(obj, name, *type, *space, H5P_DEFAULT, H5P_DEFAULT));
  std::string padded = value + std::string(3, '\0');
  REQUIRE(H5Awrite(*attr, *type, padded.data()) >= 0);
}

void int_attribute(hid_t obj, const char* name, int64_t value) {
  H5 space(H5Screate(H5S_SCALAR));
  H5 attr(H5Acreate2(obj, name, H5T_STD_I64LE, *space, H5P_DEFAULT, H5P_DEFAULT));
  REQUIRE(H5Awrite(*attr, H5T_NATIVE_INT64, &value) >= 0);
}

// The text of a string attribute as the writer stores it: fixed length, NUL padded, UTF-8.
std::string read_fixed_attribute(hid_t obj, const char* name) {
  H5 attr(H5Aopen(obj, name, H5P_DEFAULT));
  H5 type(H5Aget_type(*attr));
  CHECK(H5Tis_variable_str(*type) == 0);
  CHECK(H5Tget_strpad(*type) == H5T_STR_NULLPAD);
  CHECK(H5Tget_cset(*type) == H5T_CSET_UTF8);
  std::string text(H5Tget_size(*type), '\0');
  REQUIRE(H5Aread(*attr, *type, text.data()) >= 0);
  return text.substr(0, text.find('\0'));
}

hid_t create_file(const fs::path& path, bool track_order) {
  H5 fcpl(H5Pcreate(H5P_FILE_CREATE));
  if (track_order) H5Pset_link_creation_order(*fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
  return H5Fcreate(path.c_str(), H5F_ACC_TRUNC, *fcpl, H5P_DEFAULT);
}

// A contiguous dataset of `file_type` with `data` given in `memory_type` (none: left unwritten).
void dataset(hid_t file, const std::string& name, hid_t file_type, const std::vector<hsize_t>& dims,
             hid_t memory_type = -1, const void* data = nullptr, hid_t dcpl = H5P_DEFAULT) {
  H5 space(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(int(dims.size()), dims.data(), nullptr));
  H5 ds(H5Dcreate2(file, name.c_str(), file_type, *space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
  if (data) REQUIRE(H5Dwrite(*ds, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
}

void f32_dataset(hid_t file, const std::string& name, const Shape& shape, const std::vector<float>& values) {
  dataset(file, name, H5T_IEEE_F32LE, std::vector<hsize_t>(shape.begin(), shape.end()), H5T_NATIVE_FLOAT,
          values.data());
}

std::vector<float> values_for(const Shape& shape, uint64_t seed) {
  return test::random_values(*shape_elements(shape), seed);
}

// A valid checkpoint of `config` by hand: the root attributes, then every tensor as f32 in
// `order` (indices into expected_tensors), with values from values_for(shape, index).
void hand_made(const fs::path& path, const ModelConfig& config, bool track_order = true,
               std::vector<size_t> order = {}) {
  auto expected = expected_tensors(config);
  if (order.empty())
    for (size_t i = 0; i < expected.size(); ++i) order.push_back(i);
  H5 file(create_file(path, track_order));
  string_attribute(*file, "format", "upcycle-checkpoint");
  int_attribute(*file, "format_version", 1);
  string_attribute(*file, "config", config.to_json().dump());
  for (size_t i : order) f32_dataset(*file, expected[i].name, expected[i].shape, values_for(expected[i].shape, i));
}

// A file with a valid config and whatever `fill` adds: for cases about one dataset.
void with_config(const fs::path& path, const std::function<void(hid_t)>& fill) {
  H5 file(create_file(path, true));
  string_attribute(*file, "config", test::tiny_config("llama").to_json().dump());
  fill(*file);
}

}  // namespace

TEST_CASE("hdf5: f32 round trip is bit exact for llama, mixtral and qwen2") {
  for (std::string type : {"llama", "mixtral", "qwen2"}) {
    CAPTURE(type);
    test::ScratchDir dir;
    auto in = test::random_checkpoint(test::tiny_config(type), 7);
    write_h5(*in, dir / "m.h5", quiet());
    auto back = open_checkpoint(dir / "m.h5");  // also checks the tensors against the config
    CHECK(back->format() == "hdf5");
    CHECK(back->path() == dir / "m.h5");
    CHECK(back->config().to_json().dump() == in->config().to_json().dump());
    REQUIRE(names_of(*back) == canonical_names(*in));
    for (const auto& t : in->tensors()) {
      CAPTURE(t.name);
      CHECK(back->find(t.name)->dtype == DType::F32);
      CHECK(test::same_tensor(back->load(t.name), in->load(t.name)));
    }
    CHECK(back->parameter_count() == in->parameter_count());
  }
}

TEST_CASE("hdf5: bf16, f16 and f64 keep their dtype and bits") {
  for (DType dtype : {DType::BF16, DType::F16, DType::F64}) {
    CAPTURE(dtype_name(dtype));
    test::ScratchDir dir;
    auto in = test::random_checkpoint(test::tiny_config("llama"), 11, dtype);
    write_h5(*in, dir / "m.h5", quiet());
    auto back = open_h5(dir / "m.h5");
    for (const auto& t : in->tensors()) {
      CAPTURE(t.name);
      Tensor got = back->load(t.name);
      CHECK(got.dtype() == dtype);
      CHECK(test::same_tensor(got, in->load(t.name)));
    }
  }
}

TEST_CASE("hdf5: the written file follows the documented layout") {
  test::ScratchDir dir;
  auto in = test::random_checkpoint(test::tiny_config("llama"), 5, DType::BF16);
  write_h5(*in, dir / "m.h5", quiet());

  H5 file(H5Fopen((dir / "m.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  H5F_info2_t info{};
  REQUIRE(H5Fget_info2(*file, &info) >= 0);
  CHECK(info.super.version == 2);  // the 1.8 format: checksummed metadata
  CHECK(read_fixed_attribute(*file, "format") == "upcycle-checkpoint");
  int64_t version = 0;
  {
    H5 attr(H5Aopen(*file, "format_version", H5P_DEFAULT));
    REQUIRE(H5Aread(*attr, H5T_NATIVE_INT64, &version) >= 0);
  }
  CHECK(version == 1);
  CHECK(json::parse(read_fixed_attribute(*file, "config")) == in->config().to_json());

  H5 root(H5Gopen2(*file, "/", H5P_DEFAULT));
  H5 gcpl(H5Gget_create_plist(*root));
  unsigned flags = 0;
  H5Pget_link_creation_order(*gcpl, &flags);
  CHECK(flags == (H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED));
  H5G_info_t group{};
  REQUIRE(H5Gget_info(*root, &group) >= 0);
  CHECK(group.nlinks == in->tensors().size());

  H5 ds(H5Dopen2(*file, "model.layers.1.self_attn.k_proj.weight", H5P_DEFAULT));
  H5 type(H5Dget_type(*ds));
  CHECK(H5Tequal(*type, H5T_STD_U16LE) > 0);
  CHECK(read_fixed_attribute(*ds, "dtype") == "bf16");
  H5 dcpl(H5Dget_create_plist(*ds));
  CHECK(H5Pget_layout(*dcpl) == H5D_CONTIGUOUS);
  H5 space(H5Dget_space(*ds));
  hsize_t dims[2] = {};
  REQUIRE(H5Sget_simple_extent_ndims(*space) == 2);
  H5Sget_simple_extent_dims(*space, dims, nullptr);
  CHECK(dims[0] == 8);  // kv heads 2 x head_dim 4
  CHECK(dims[1] == 16);

  // f32 is stored as a plain IEEE float with no dtype attribute.
  auto f32 = test::random_checkpoint(test::tiny_config("llama"), 5);
  write_h5(*f32, dir / "f.h5", quiet());
  H5 ffile(H5Fopen((dir / "f.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  H5 fds(H5Dopen2(*ffile, "model.norm.weight", H5P_DEFAULT));
  H5 ftype(H5Dget_type(*fds));
  CHECK(H5Tequal(*ftype, H5T_IEEE_F32LE) > 0);
  CHECK(H5Aexists(*fds, "dtype") == 0);
}

TEST_CASE("hdf5: the same checkpoint always gives the same bytes (no timestamps)") {
  test::ScratchDir dir;
  auto in = test::random_checkpoint(test::tiny_config("mixtral"), 8);
  write_h5(*in, dir / "a.h5", quiet());
  write_h5(*in, dir / "b.h5", quiet());
  CHECK(test::read_file(dir / "a.h5") == test::read_file(dir / "b.h5"));
  H5 file(H5Fopen((dir / "a.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  for (const char* name : {"/", "model.layers.1.block_sparse_moe.experts.3.w2.weight"}) {
    CAPTURE(name);
    H5O_info_t info{};
    REQUIRE(H5Oget_info_by_name2(*file, name, &info, H5O_INFO_TIME, H5P_DEFAULT) >= 0);
    CHECK(info.mtime == 0);
    CHECK(info.ctime == 0);
  }
}

TEST_CASE("hdf5: opts.dtype converts every tensor on the way") {
  test::ScratchDir dir;
  auto in = test::random_checkpoint(test::tiny_config("mixtral"), 3);
  for (DType dtype : {DType::BF16, DType::F16}) {
    CAPTURE(dtype_name(dtype));
    fs::path out = dir / (std::string(dtype_name(dtype)) + ".h5");
    write_h5(*in, out, quiet(dtype));
    auto back = open_h5(out);
    for (const auto& t : in->tensors()) {
      CAPTURE(t.name);
      CHECK(test::same_tensor(back->load(t.name), in->load(t.name).to(dtype)));
    }
  }
}

TEST_CASE("hdf5: a tensor larger than one write piece (16 MB) lands whole, converted or not") {
  test::ScratchDir dir;
  const Shape shape = {300'000, 16};  // 19.2 MB in f32
  const Tensor big = Tensor::from_f32(shape, values_for(shape, 17));
  ComputedCheckpoint in(test::tiny_config("llama"), {{"big", DType::F32, shape}},
                        [&](const TensorInfo&) { return big; });
  for (std::optional<DType> dtype : {std::optional<DType>(), std::optional<DType>(DType::BF16)}) {
    const fs::path out = dir / (dtype ? "bf16.h5" : "f32.h5");
    write_h5(in, out, quiet(dtype));
    CHECK(test::same_tensor(open_h5(out)->load("big"), big.to(dtype.value_or(DType::F32))));
  }
}

TEST_CASE("hdf5: threads may share checkpoints and write while others read") {
  test::ScratchDir dir;
  auto in = test::random_checkpoint(test::tiny_config("mixtral"), 12);
  write_h5(*in, dir / "a.h5", quiet());
  auto a = open_h5(dir / "a.h5");
  std::atomic<int> mismatches{0};
  auto read_all = [&] {
    for (int round = 0; round < 5; ++round)
      for (const auto& t : in->tensors())
        if (!test::same_tensor(a->load(t.name), in->load(t.name))) ++mismatches;
  };
  std::vector<std::thread> threads;
  threads.emplace_back([&] { write_h5(*a, dir / "b.h5", quiet(DType::BF16)); });
  for (int i = 0; i < 3; ++i) threads.emplace_back(read_all);
  for (auto& t : threads) t.join();
  CHECK(mismatches == 0);
  auto b = open_h5(dir / "b.h5");
  for (const auto& t : in->tensors()) CHECK(test::same_tensor(b->load(t.name), in->load(t.name).to(DType::BF16)));
}

TEST_CASE("hdf5: tensor order is canonical on write and the file's creation order on read") {
  test::ScratchDir dir;
  auto canonical = test::random_checkpoint(test::tiny_config("llama"), 9);
  std::vector<TensorInfo> reversed(canonical->tensors().rbegin(), canonical->tensors().rend());
  ComputedCheckpoint shuffled(canonical->config(), reversed,
                              [&](const TensorInfo& info) { return canonical->load(info.name); });
  write_h5(shuffled, dir / "m.h5", quiet());
  auto back = open_h5(dir / "m.h5");
  CHECK(names_of(*back) == canonical_names(shuffled));
  std::vector<std::string> sorted = names_of(*canonical);
  std::sort(sorted.begin(), sorted.end());
  CHECK(names_of(*back) != sorted);  // the order came from the file, not from HDF5's name index

  // A file tracking creation order is read in that order, even when it is not canonical.
  ModelConfig config = test::tiny_config("llama");
  std::vector<size_t> order;
  for (size_t i = expected_tensors(config).size(); i-- > 0;) order.push_back(i);
  hand_made(dir / "rev.h5", config, /*track_order=*/true, order);
  CHECK(names_of(*open_h5(dir / "rev.h5")) == names_of(shuffled));
  // One that does not is read in canonical order.
  hand_made(dir / "untracked.h5", config, /*track_order=*/false, order);
  CHECK(names_of(*open_h5(dir / "untracked.h5")) == canonical_names(shuffled));
}

TEST_CASE("hdf5: config fields the tool does not know pass through unchanged") {
  test::ScratchDir dir;
  json j = test::tiny_config("llama").to_json();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"original_max_position_embeddings", 64}};
  j["zz_custom"] = {1, "two", nullptr, {{"nested", 3.5}}};
  for (int i = 0; i < 6000; ++i) j["id2label"][std::to_string(i)] = "LABEL_" + std::to_string(i);  // > 64 KiB
  ModelConfig config = ModelConfig::from_json(j, "<test>");
  auto in = test::random_checkpoint(config, 1);
  write_h5(*in, dir / "m.h5", quiet());
  auto back = open_h5(dir / "m.h5");
  REQUIRE(j.dump().size() > 65536);
  CHECK(back->config().to_json().dump() == j.dump());  // values and key order
  CHECK(back->config().raw["an_unknown_field"]["kept"] == true);
  CHECK(back->config().rope_scaling["factor"] == 8.0);
}

TEST_CASE("hdf5: a failed write leaves nothing at the output and an old output untouched") {
  test::ScratchDir dir;
  auto good = test::random_checkpoint(test::tiny_config("llama"), 2);
  int loads = 0;
  ComputedCheckpoint failing(good->config(), good->tensors(), [&](const TensorInfo& info) {
    if (++loads == 5) throw InputError("<source>", "tensor '" + info.name + "'", "disk on fire");
    return good->load(info.name);
  });
  expect_input_error([&] { write_h5(failing, dir / "m.h5", quiet()); }, "<source>", "disk on fire");
  CHECK(fs::is_empty(dir.path()));

  write_h5(*good, dir / "m.h5", quiet());
  const std::string before = test::read_file(dir / "m.h5");
  loads = 0;
  WriteOptions replace = quiet();
  replace.overwrite = true;
  CHECK_THROWS_AS(write_h5(failing, dir / "m.h5", replace), InputError);
  CHECK(test::read_file(dir / "m.h5") == before);
  CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);
  expect_input_error([&] { write_h5(*good, dir / "m.h5", quiet()); }, dir / "m.h5", "already exists");
}

TEST_CASE("hdf5: the writer refuses names with '/' and rank 0 before writing anything") {
  test::ScratchDir dir;
  auto loader = [](const TensorInfo& info) { return Tensor::zeros(info.dtype, info.shape); };
  ModelConfig config = test::tiny_config("llama");
  ComputedCheckpoint slash(config, {{"model.norm.weight", DType::F32, {16}}, {"a/b", DType::F32, {2}}}, loader);
  expect_input_error([&] { write_h5(slash, dir / "m.h5", quiet()); }, "<computed>", "without '/'");
  ComputedCheckpoint scalar(config, {{"s", DType::F32, {}}}, loader);
  expect_input_error([&] { write_h5(scalar, dir / "m.h5", quiet()); }, "<computed>", "rank 0");
  CHECK(fs::is_empty(dir.path()));
}

TEST_CASE("hdf5: files made by hand: fixed-length config, no format attributes, gzip chunks, h5py half floats") {
  test::ScratchDir dir;
  const fs::path path = dir / "hand.h5";
  ModelConfig config = test::tiny_config("llama", /*tied=*/true);
  auto expected = expected_tensors(config);
  std::vector<float> embed_values = values_for(expected[0].shape, 0);
  const std::vector<float> norm_values = {1, -2, 0.5f, 0.25f, 3, -0.125f, 65504, 0, 1, 2, 3, 4, 5, 6, 7, -8};
  {
    H5 file(create_file(path, true));
    fixed_string_attribute(*file, "config", config.to_json().dump());
    for (size_t i = 0; i < expected.size(); ++i) {
      const auto& e = expected[i];
      std::vector<hsize_t> dims(e.shape.begin(), e.shape.end());
      if (i == 0) {  // the embedding chunked, shuffled and deflated, as h5py's compression="gzip" does
        H5 dcpl(H5Pcreate(H5P_DATASET_CREATE));
        const hsize_t chunk[2] = {8, 16};
        H5Pset_chunk(*dcpl, 2, chunk);
        H5Pset_shuffle(*dcpl);
        H5Pset_deflate(*dcpl, 6);
        dataset(*file, e.name, H5T_IEEE_F32LE, dims, H5T_NATIVE_FLOAT, embed_values.data(), *dcpl);
      } else if (e.name == "model.norm.weight") {  // numpy float16 through h5py: an IEEE half type
        H5 half(H5Tcopy(H5T_IEEE_F32LE));
        H5Tset_fields(*half, 15, 10, 5, 0, 10);
        H5Tset_size(*half, 2);
        H5Tset_ebias(*half, 15);
        std::vector<uint16_t> bits;
        for (float v : norm_values) bits.push_back(f32_to_f16(v));
        dataset(*file, e.name, *half, dims, *half, bits.data());
      } else if (e.name == "model.layers.0.input_layernorm.weight") {  // big endian, converted on read
        auto v = values_for(e.shape, i);
        dataset(*file, e.name, H5T_IEEE_F32BE, dims, H5T_NATIVE_FLOAT, v.data());
      } else {
        f32_dataset(*file, e.name, e.shape, values_for(e.shape, i));
      }
    }
  }
  auto ckpt = open_checkpoint(path);
  CHECK(ckpt->config().tie_word_embeddings);
  CHECK(ckpt->load(expected[0].name).to_f32_vector() == embed_values);
  Tensor norm = ckpt->load("model.norm.weight");
  CHECK(norm.dtype() == DType::F16);
  CHECK(norm.to_f32_vector() == norm_values);  // all exactly representable in f16
  CHECK(ckpt->load("model.layers.0.input_layernorm.weight").to_f32_vector() == values_for({16}, 1));
}

TEST_CASE("hdf5: files that are not HDF5, or are cut short") {
  test::ScratchDir dir;
  test::write_file(dir / "garbage.h5", std::string(4096, 'x'));
  expect_input_error([&] { open_h5(dir / "garbage.h5"); }, dir / "garbage.h5", "not an HDF5 file");
  expect_input_error([&] { open_checkpoint(dir / "garbage.h5"); }, dir / "garbage.h5", "not an HDF5 file");
  test::write_file(dir / "empty.h5", "");
  expect_input_error([&] { open_h5(dir / "empty.h5"); }, dir / "empty.h5", "not an HDF5 file");

  auto in = test::random_checkpoint(test::tiny_config("llama"), 4);
  write_h5(*in, dir / "good.h5", quiet());
  const std::string bytes = test::read_file(dir / "good.h5");
  for (size_t keep : {bytes.size() / 2, bytes.size() / 4, bytes.size() * 3 / 4, bytes.size() - 1, size_t(600)}) {
    CAPTURE(keep);
    const fs::path cut = dir / ("cut" + std::to_string(keep) + ".h5");
    test::write_file(cut, bytes.substr(0, keep));
    expect_input_error([&] { open_h5(cut); }, cut, "damaged HDF5 file");
  }
}

TEST_CASE("hdf5: root attributes that are missing or wrong") {
  test::ScratchDir dir;
  auto check_root = [&](const char* file, const std::function<void(hid_t)>& attrs, const std::string& needle) {
    {
      H5 f(create_file(dir / file, true));
      attrs(*f);
      f32_dataset(*f, "model.norm.weight", {16}, values_for({16}, 0));
    }
    expect_input_error([&] { open_h5(dir / file); }, dir / file, needle);
  };
  const std::string good = test::tiny_config("llama").to_json().dump();
  check_root("none.h5", [](hid_t) {}, "missing root attribute 'config'");
  check_root("json.h5", [](hid_t f) { string_attribute(f, "config", "{\"model_type\": \"llama\", "); },
             "root attribute 'config': not valid JSON");
  json bad = json::parse(good);
  bad["hidden_size"] = -1;
  check_root("hidden.h5", [&](hid_t f) { string_attribute(f, "config", bad.dump()); }, "hidden_size");
  check_root("array.h5", [](hid_t f) { string_attribute(f, "config", "[1, 2]"); }, "must be a JSON object");
  check_root("int.h5", [](hid_t f) { int_attribute(f, "config", 7); },
             "root attribute 'config': has type int64: expected a string");
  check_root("format.h5",
             [&](hid_t f) {
               string_attribute(f, "config", good);
               string_attribute(f, "format", "someone-else");
             },
             "expected 'upcycle-checkpoint'");
  check_root("version.h5",
             [&](hid_t f) {
               string_attribute(f, "config", good);
               int_attribute(f, "format_version", 2);
             },
             "format_version': 2: this tool reads version 1");
}

TEST_CASE("hdf5: datasets of the wrong type, rank or size, and root members that are not datasets") {
  test::ScratchDir dir;
  int n = 0;
  auto check_dataset = [&](const std::function<void(hid_t)>& fill, const std::string& needle) {
    const fs::path path = dir / ("case" + std::to_string(n++) + ".h5");
    with_config(path, fill);
    expect_input_error([&] { open_h5(path); }, path, needle);
  };
  const std::vector<int32_t> ints(16, 3);
  const std::vector<uint16_t> halves(16, 0x3c00);
  check_dataset([&](hid_t f) { dataset(f, "w", H5T_STD_I32LE, {16}, H5T_NATIVE_INT32, ints.data()); },
                "dataset 'w': has type int32: expected f32/f64 or u16 with a dtype attribute");
  check_dataset([&](hid_t f) { dataset(f, "w", H5T_STD_U16LE, {16}, H5T_NATIVE_UINT16, halves.data()); },
                "dataset 'w': has type uint16 but no 'dtype' attribute");
  auto tagged_u16 = [&](const char* tag) {
    return [&, tag](hid_t f) {
      dataset(f, "w", H5T_STD_U16LE, {16}, H5T_NATIVE_UINT16, halves.data());
      H5 ds(H5Dopen2(f, "w", H5P_DEFAULT));
      string_attribute(*ds, "dtype", tag);
    };
  };
  check_dataset(tagged_u16("q7"), "dataset 'w': dtype attribute 'q7' unknown");
  check_dataset(tagged_u16("f32"), "dtype attribute 'f32' does not fit its type uint16");
  const float one = 1;
  check_dataset([&](hid_t f) { dataset(f, "s", H5T_IEEE_F32LE, {}, H5T_NATIVE_FLOAT, &one); },
                "dataset 's': rank 0: expected 1 to 8 dimensions");
  check_dataset([&](hid_t f) { dataset(f, "r9", H5T_IEEE_F32LE, std::vector<hsize_t>(9, 1), H5T_NATIVE_FLOAT, &one); },
                "dataset 'r9': rank 9");
  // A shape of 4 TiB with no data behind it: refused from the metadata, nothing allocated.
  check_dataset([](hid_t f) { dataset(f, "huge", H5T_IEEE_F32LE, {hsize_t(1) << 20, hsize_t(1) << 20}); },
                "dataset 'huge': stores 0 bytes of data but shape [1048576, 1048576] of f32 needs 4398046511104");
  check_dataset(
      [](hid_t f) {
        H5 dcpl(H5Pcreate(H5P_DATASET_CREATE));
        const hsize_t chunk[2] = {1024, 1024};
        H5Pset_chunk(*dcpl, 2, chunk);
        H5Pset_deflate(*dcpl, 1);
        dataset(f, "lazy", H5T_IEEE_F32LE, {hsize_t(1) << 30, hsize_t(1) << 30}, -1, nullptr, *dcpl);
      },
      "dataset 'lazy': stores 0 bytes of chunked data, too few even compressed");
  check_dataset(
      [](hid_t f) {
        H5 dcpl(H5Pcreate(H5P_DATASET_CREATE));
        H5Pset_external(*dcpl, "elsewhere.bin", 0, 64);
        dataset(f, "ext", H5T_IEEE_F32LE, {16}, -1, nullptr, *dcpl);
      },
      "dataset 'ext': keeps its data in external files");
  check_dataset([](hid_t f) { H5 g(H5Gcreate2(f, "model", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)); },
                "dataset 'model': is a group");
  check_dataset([](hid_t f) { H5Lcreate_soft("/etc/passwd", f, "soft", H5P_DEFAULT, H5P_DEFAULT); },
                "root member 'soft': is a soft or external link");
  check_dataset([](hid_t f) { H5Lcreate_external("other.h5", "/x", f, "ext", H5P_DEFAULT, H5P_DEFAULT); },
                "root member 'ext': is a soft or external link");
}

TEST_CASE("hdf5: a dataset whose shape disagrees with the config") {
  test::ScratchDir dir;
  ModelConfig config = test::tiny_config("llama");
  auto expected = expected_tensors(config);
  {
    H5 file(create_file(dir / "m.h5", true));
    string_attribute(*file, "config", config.to_json().dump());
    for (const auto& e : expected) {
      Shape shape = e.name == "model.layers.1.mlp.up_proj.weight" ? Shape{16, 24} : e.shape;
      f32_dataset(*file, e.name, shape, values_for(shape, 0));
    }
  }
  CHECK(open_h5(dir / "m.h5")->tensors().size() == expected.size());  // fine as a file
  expect_input_error([&] { open_checkpoint(dir / "m.h5"); }, dir / "m.h5",
                     "tensor 'model.layers.1.mlp.up_proj.weight': shape [16, 24] but the config implies [24, 16]");
}

TEST_CASE("hdf5: corrupted metadata in a written file is reported, never misread") {
  test::ScratchDir dir;
  auto in = test::random_checkpoint(test::tiny_config("llama"), 6);
  write_h5(*in, dir / "good.h5", quiet());
  const std::string bytes = test::read_file(dir / "good.h5");
  std::vector<std::pair<uint64_t, uint64_t>> data;  // [begin, end) of tensor data: no checksum covers it
  {
    H5 file(H5Fopen((dir / "good.h5").c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    for (const auto& t : in->tensors()) {
      H5 ds(H5Dopen2(*file, t.name.c_str(), H5P_DEFAULT));
      data.emplace_back(H5Dget_offset(*ds), H5Dget_offset(*ds) + H5Dget_storage_size(*ds));
    }
  }
  auto in_data = [&](size_t pos) {
    return std::any_of(data.begin(), data.end(), [pos](auto r) { return pos >= r.first && pos < r.second; });
  };
  const fs::path path = dir / "bad.h5";
  int reported = 0, unused = 0;
  for (size_t pos = 0; pos < bytes.size(); pos += 7) {
    if (in_data(pos)) continue;
    CAPTURE(pos);
    std::string bad = bytes;
    bad[pos] = char(bad[pos] ^ 0x5a);
    test::write_file(path, bad);
    try {
      auto back = open_h5(path);
      CHECK(back->config().to_json() == in->config().to_json());
      REQUIRE(back->tensors().size() == in->tensors().size());
      for (const auto& t : in->tensors()) CHECK(test::same_tensor(back->load(t.name), in->load(t.name)));
      ++unused;  // a byte HDF5 does not read (padding, free space)
    } catch (const InputError& e) {
      CHECK(e.file() == path.string());
      ++reported;
    }
  }
  MESSAGE(reported << " corruptions reported, " << unused << " in unused bytes");
  CHECK(reported > 2 * unused);  // most metadata is covered by checksums
}

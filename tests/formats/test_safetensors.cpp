// safetensors files: reading hand-built files, the writer's exact layout, round trips, and
// malformed input of every kind refused with the file and the problem named.
#include <doctest/doctest.h>

#include <cstring>
#include <initializer_list>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "formats/safetensors.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
namespace fs = std::filesystem;

namespace {

// A safetensors file from a hand-written header and raw data, exactly as given (no padding).
std::string st_file(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  for (size_t i = 0; i < 8; ++i) out[i] = char(uint64_t(header.size()) >> (8 * i));
  return out + header + data;
}

std::string padded(std::string header) {
  header.resize((header.size() + 7) / 8 * 8, ' ');
  return header;
}

// Little-endian bytes of values (this machine is little endian, like the format).
template <class T>
std::string raw(std::initializer_list<T> values) {
  std::string s(values.size() * sizeof(T), '\0');
  std::memcpy(s.data(), values.begin(), s.size());
  return s;
}

std::string error_of(const fs::path& path) {
  try {
    SafetensorsFile::open(path);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(opened without error)";
}

const SafetensorsEntry& entry_named(const SafetensorsFile& f, const std::string& name) {
  for (const auto& e : f.entries())
    if (e.info.name == name) return e;
  FAIL("no entry " << name);
  throw std::logic_error("unreachable");
}

std::vector<TensorInfo> mixed_infos() {
  return {{"z.weight", DType::F32, {2, 3}},
          {"a.weight", DType::BF16, {4}},
          {"m.weight", DType::F16, {3, 1}},
          {"d.weight", DType::F64, {2}},
          {"empty", DType::F32, {0, 5}}};
}

Tensor random_tensor(const TensorInfo& info, uint64_t seed) {
  if (shape_elements(info.shape) == 0u) return Tensor::zeros(info.dtype, info.shape);
  return Tensor::from_f32(info.shape, test::random_values(*shape_elements(info.shape), seed)).to(info.dtype);
}

}  // namespace

TEST_CASE("safetensors: reads a hand-built file, entries in offset order, tensors memory mapped") {
  test::ScratchDir dir;
  const std::string header = padded(
      R"({"__metadata__":{"format":"pt","note":"hi"},)"
      R"("w.f32":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
      R"("w.bf16":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]},)"
      R"("w.f64":{"dtype":"F64","shape":[1,1],"data_offsets":[16,24]},)"
      R"("w.f16":{"dtype":"F16","shape":[2],"data_offsets":[24,28]}})");
  const std::string data = raw<uint16_t>({0x3f80, 0x4000, 0x4040, 0xbf00}) + raw<float>({1.5f, -2.0f}) +
                           raw<double>({0.25}) + raw<uint16_t>({0x3c00, 0xc000});
  test::write_file(dir / "a.safetensors", st_file(header, data));

  SafetensorsFile f = SafetensorsFile::open(dir / "a.safetensors");
  std::vector<std::string> names;
  for (const auto& e : f.entries()) names.push_back(e.info.name);
  CHECK(names == std::vector<std::string>{"w.bf16", "w.f32", "w.f64", "w.f16"});
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"note", "hi"}});

  const SafetensorsEntry& bf = entry_named(f, "w.bf16");
  CHECK(bf.info.dtype == DType::BF16);
  CHECK(bf.info.shape == Shape{2, 2});
  CHECK(bf.offset == 8 + header.size());
  CHECK(bf.nbytes == 8);
  CHECK(f.load(bf).to_f32_vector() == std::vector<float>{1, 2, 3, -0.5f});
  Tensor f32 = f.load(entry_named(f, "w.f32"));
  CHECK(f32.to_f32_vector() == std::vector<float>{1.5f, -2.0f});
  CHECK_THROWS_AS(f32.mutable_bytes(), std::logic_error);  // a read-only view of the map
  CHECK(f.load(entry_named(f, "w.f64")).span<double>()[0] == 0.25);
  CHECK(f.load(entry_named(f, "w.f16")).to_f32_vector() == std::vector<float>{1.0f, -2.0f});
}

TEST_CASE("safetensors: unaligned tensors, zero-size tensors, an empty header") {
  test::ScratchDir dir;
  // Header of 48 bytes: the f32 tensor starts 2 bytes into the data, so 2 bytes off alignment.
  const std::string header = padded(R"({"h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},)"
                                    R"("f":{"dtype":"F32","shape":[2],"data_offsets":[2,10]},)"
                                    R"("z":{"dtype":"F32","shape":[3,0],"data_offsets":[10,10]}})");
  test::write_file(dir / "u.safetensors", st_file(header, raw<uint16_t>({0x3c00}) + raw<float>({-3.25f, 8.0f})));
  SafetensorsFile f = SafetensorsFile::open(dir / "u.safetensors");
  CHECK(f.entries().size() == 3);
  CHECK(f.load(entry_named(f, "f")).span<float>()[0] == -3.25f);
  CHECK(f.load(entry_named(f, "f")).span<float>()[1] == 8.0f);
  Tensor z = f.load(entry_named(f, "z"));
  CHECK(z.numel() == 0);
  CHECK(z.shape() == Shape{3, 0});
  CHECK(f.metadata().empty());

  test::write_file(dir / "e.safetensors", st_file("{}      "));
  CHECK(SafetensorsFile::open(dir / "e.safetensors").entries().empty());
}

TEST_CASE("safetensors: writer layout is exact and round trips bit for bit") {
  test::ScratchDir dir;
  const auto infos = mixed_infos();
  std::vector<Tensor> tensors;
  for (size_t i = 0; i < infos.size(); ++i) tensors.push_back(random_tensor(infos[i], i + 1));
  {
    SafetensorsWriter w(dir / "w.safetensors", infos);
    for (const Tensor& t : tensors) w.write(t);
    w.finish();
    CHECK(w.file_size() == fs::file_size(dir / "w.safetensors"));
  }
  const std::string bytes = test::read_file(dir / "w.safetensors");
  uint64_t n = 0;
  for (size_t i = 0; i < 8; ++i) n |= uint64_t(uint8_t(bytes[i])) << (8 * i);
  CHECK(n % 8 == 0);
  CHECK(safetensors_header_bytes(infos) == 8 + n);
  const std::string text = bytes.substr(8, n);
  const size_t close = text.find_last_of('}');
  CHECK(text.find_first_not_of(' ', close + 1) == std::string::npos);  // padded with spaces

  auto header = nlohmann::ordered_json::parse(text);
  std::vector<std::string> keys;
  for (const auto& [key, value] : header.items()) keys.push_back(key);
  CHECK(keys == std::vector<std::string>{"__metadata__", "z.weight", "a.weight", "m.weight", "d.weight", "empty"});
  CHECK(header["__metadata__"] == nlohmann::ordered_json{{"format", "pt"}});
  CHECK(header["z.weight"]["dtype"] == "F32");
  CHECK(header["z.weight"]["data_offsets"] == nlohmann::ordered_json{0, 24});
  CHECK(header["a.weight"]["data_offsets"] == nlohmann::ordered_json{24, 32});
  CHECK(header["m.weight"]["data_offsets"] == nlohmann::ordered_json{32, 38});
  CHECK(header["d.weight"]["data_offsets"] == nlohmann::ordered_json{38, 54});
  CHECK(header["empty"]["data_offsets"] == nlohmann::ordered_json{54, 54});
  CHECK(bytes.size() == 8 + n + 54);

  SafetensorsFile f = SafetensorsFile::open(dir / "w.safetensors");
  REQUIRE(f.entries().size() == infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    CAPTURE(infos[i].name);
    CHECK(test::same_tensor(f.load(entry_named(f, infos[i].name)), tensors[i]));
  }
  CHECK(f.metadata().at("format") == "pt");
}

TEST_CASE("safetensors: header sizes agree with the writer, with and without metadata") {
  test::ScratchDir dir;
  const auto infos = mixed_infos();
  for (const auto& metadata : {std::map<std::string, std::string>{}, kSafetensorsPtMetadata,
                               std::map<std::string, std::string>{{"a", "b"}, {"long", std::string(100, 'x')}}}) {
    SafetensorsSizer sizer(metadata);
    for (size_t k = 0; k <= infos.size(); ++k) {
      std::vector<TensorInfo> prefix(infos.begin(), infos.begin() + k);
      const fs::path path = dir / std::to_string(k).append(".safetensors");
      {
        SafetensorsWriter w(path, prefix, metadata);
        for (size_t i = 0; i < k; ++i) w.write(random_tensor(infos[i], i));
        w.finish();
      }
      CAPTURE(k);
      CHECK(sizer.file_size() == fs::file_size(path));
      CHECK(safetensors_header_bytes(prefix, metadata) == sizer.header_bytes());
      CHECK(SafetensorsFile::open(path).metadata() == metadata);
      if (k < infos.size()) {
        uint64_t predicted = sizer.file_size_with(infos[k]);
        sizer.add(infos[k]);
        CHECK(predicted == sizer.file_size());
      }
    }
  }
}

TEST_CASE("safetensors: writer converts dtypes, refuses other shapes and an early finish") {
  test::ScratchDir dir;
  const std::vector<TensorInfo> infos = {{"a", DType::F32, {2}}, {"b", DType::BF16, {2}}};
  SafetensorsWriter w(dir / "x.safetensors", infos);
  CHECK_THROWS_AS(w.write(Tensor::from_f32({3}, {1, 2, 3})), std::logic_error);          // shape
  w.write(Tensor::from_f32({2}, {1, 2.5f}).to(DType::F16));  // converted to the header's f32
  CHECK_THROWS_AS(w.finish(), std::logic_error);  // b not written
  w.write(Tensor::from_f32({2}, {3, 4}));  // converted to bf16
  CHECK_THROWS_AS(w.write(Tensor::from_f32({2}, {1, 2})), std::logic_error);  // more than listed
  w.finish();
  CHECK_THROWS_AS(w.finish(), std::logic_error);
  SafetensorsFile f = SafetensorsFile::open(dir / "x.safetensors");
  CHECK(f.load(entry_named(f, "a")).to_f32_vector() == std::vector<float>{1, 2.5f});
  CHECK(f.load(entry_named(f, "b")).dtype() == DType::BF16);
  CHECK(f.load(entry_named(f, "b")).to_f32_vector() == std::vector<float>{3, 4});
}

TEST_CASE("safetensors: a group of computed tensors is written range by range across them, in place") {
  test::ScratchDir dir;
  const uint64_t n = 1'500'000;  // more than one range of the group
  auto value = [](int t, uint64_t i) { return float(t) + float(i % 1000) / 1000.0f; };
  std::vector<std::pair<int, uint64_t>> asked;  // (tensor, first) in the order the writer asks
  const auto group = std::make_shared<int>(0);
  auto computed = [&](int t) {
    return Tensor::computed({int64_t(n)}, [&, t](uint64_t first, std::span<float> out) {
      asked.emplace_back(t, first);
      for (size_t i = 0; i < out.size(); ++i) out[i] = value(t, first + i);
    }, group);
  };
  const std::vector<TensorInfo> infos = {{"a", DType::F32, {3}}, {"g1", DType::BF16, {int64_t(n)}},
                                         {"g2", DType::F32, {int64_t(n)}}, {"g3", DType::BF16, {int64_t(n)}},
                                         {"b", DType::F32, {2}}};
  SafetensorsWriter w(dir / "g.safetensors", infos);
  w.write(Tensor::from_f32({3}, {1, 2, 3}));
  const Tensor other = Tensor::computed({int64_t(n)}, [](uint64_t, std::span<float>) {}, std::make_shared<int>(1));
  CHECK_THROWS_AS(w.write_group(std::vector<Tensor>{computed(1), other}), std::logic_error);  // not one group
  w.write_group(std::vector<Tensor>{computed(1), computed(2), computed(3)});
  w.write(Tensor::from_f32({2}, {4, 5}));
  w.finish();
  // Each range of every tensor in turn, before the next range.
  REQUIRE(asked.size() >= 6);
  CHECK(asked[0] == std::pair{1, uint64_t(0)});
  CHECK(asked[1] == std::pair{2, uint64_t(0)});
  CHECK(asked[2] == std::pair{3, uint64_t(0)});
  CHECK(asked[3].first == 1);
  CHECK(asked[3].second > 0);
  SafetensorsFile f = SafetensorsFile::open(dir / "g.safetensors");
  CHECK(f.load(entry_named(f, "a")).to_f32_vector() == std::vector<float>{1, 2, 3});
  CHECK(f.load(entry_named(f, "b")).to_f32_vector() == std::vector<float>{4, 5});
  for (int t = 1; t <= 3; ++t) {
    CAPTURE(t);
    std::vector<float> want(n);
    for (uint64_t i = 0; i < n; ++i) want[i] = value(t, i);
    const Tensor written = f.load(entry_named(f, "g" + std::to_string(t)));
    CHECK(written.to_f32_vector() == Tensor::from_f32({int64_t(n)}, want).to(written.dtype()).to_f32_vector());
  }
}

TEST_CASE("safetensors: a computed tensor of segments is written a range of each segment in turn, in place") {
  test::ScratchDir dir;
  const uint64_t per = 1'500'000;  // elements per segment: more than one range of each
  std::vector<uint64_t> asked;
  const Tensor t = Tensor::computed({3, int64_t(per)}, [&](uint64_t first, std::span<float> out) {
    asked.push_back(first);
    for (size_t i = 0; i < out.size(); ++i) out[i] = float((first + i) % 4093);
  }, {}, 3);
  CHECK(t.segments() == 3);
  CHECK_THROWS_AS(Tensor::computed({5}, [](uint64_t, std::span<float>) {}, {}, 2), std::invalid_argument);
  const std::vector<TensorInfo> infos = {{"s", DType::BF16, {3, int64_t(per)}}, {"b", DType::F32, {1}}};
  SafetensorsWriter w(dir / "s.safetensors", infos);
  w.write(t);
  w.write(Tensor::from_f32({1}, {7}));
  w.finish();
  REQUIRE(asked.size() >= 4);
  CHECK(asked[0] == 0);
  CHECK(asked[1] == per);
  CHECK(asked[2] == 2 * per);
  CHECK((asked[3] > 0 && asked[3] < per));
  SafetensorsFile f = SafetensorsFile::open(dir / "s.safetensors");
  std::vector<float> want(3 * per);
  for (uint64_t i = 0; i < want.size(); ++i) want[i] = float(i % 4093);
  CHECK(f.load(entry_named(f, "s")).to_f32_vector() == Tensor::from_f32({3, int64_t(per)}, want).to(DType::BF16).to_f32_vector());
  CHECK(f.load(entry_named(f, "b")).to_f32_vector() == std::vector<float>{7});
}

TEST_CASE("safetensors: malformed files are refused naming the file and the problem") {
  test::ScratchDir dir;
  const std::string two_f32 = raw<float>({1, 2});
  auto one = [&](const std::string& entry) { return st_file("{" + entry + "}", two_f32); };
  struct Case {
    const char* what;
    std::string contents;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"empty file", "", "empty file"},
      {"shorter than 8 bytes", "abcde", "5 bytes, shorter than the 8-byte header length"},
      {"header length beyond the file", raw<uint64_t>({100}) + "{}", "header length 100 exceeds the 2 bytes"},
      {"header length 2^63", raw<uint64_t>({uint64_t(1) << 63}) + "{}", "header length 9223372036854775808"},
      {"bad JSON", st_file(R"({"a":)"), "header is not valid JSON"},
      {"invalid UTF-8", st_file("{\"\xff\":1}"), "header is not valid JSON"},
      {"header not an object", st_file("[1,2]"), "header is not a JSON object"},
      {"entry not an object", one(R"("a":5)"), "tensor 'a': entry is not an object"},
      {"missing dtype", one(R"("a":{"shape":[2],"data_offsets":[0,8]})"), "tensor 'a': 'dtype' is missing"},
      {"dtype not a string", one(R"("a":{"dtype":4,"shape":[2],"data_offsets":[0,8]})"), "dtype must be a string"},
      {"unknown dtype", one(R"("a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]})"), "unknown dtype 'F33'"},
      {"unsupported dtype", one(R"("a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]})"),
       "dtype I64 is not supported"},
      {"unsupported dtype BOOL", one(R"("a":{"dtype":"BOOL","shape":[8],"data_offsets":[0,8]})"),
       "dtype BOOL is not supported"},
      {"missing shape", one(R"("a":{"dtype":"F32","data_offsets":[0,8]})"), "'shape' is missing"},
      {"shape not an array", one(R"("a":{"dtype":"F32","shape":2,"data_offsets":[0,8]})"), "shape must be an array"},
      {"negative shape", one(R"("a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"),
       "non-negative integers, found -2"},
      {"fractional shape", one(R"("a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})"),
       "non-negative integers, found 2.0"},
      {"string shape", one(R"("a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]})"),
       "non-negative integers, found \"2\""},
      {"nested shape", one(R"("a":{"dtype":"F32","shape":[[2]],"data_offsets":[0,8]})"),
       "header nests arrays or objects deeper than a safetensors header has"},
      {"deeply nested header", st_file(std::string(100000, '[') + std::string(100000, ']')),
       "header nests arrays or objects deeper"},
      {"shape holding an object", one(R"("a":{"dtype":"F32","shape":[{}],"data_offsets":[0,8]})"),
       "header nests arrays or objects deeper"},
      {"metadata value an object", one(R"("__metadata__":{"format":{}})"),
       "__metadata__ 'format': value must be a string, found an object"},
      {"shape times dtype differs from the range", one(R"("a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]})"),
       "needs 12 bytes but data_offsets span 8"},
      {"overflowing shape product",
       one(R"("a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]})"),
       "overflows a 64-bit byte count"},
      {"overflowing byte count", one(R"("a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,8]})"),
       "overflows a 64-bit byte count"},
      {"missing offsets", one(R"("a":{"dtype":"F32","shape":[2]})"), "'data_offsets' is missing"},
      {"one offset", one(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0]})"),
       "data_offsets must be an array [begin, end]"},
      {"negative offset", one(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]})"),
       "data_offsets must hold non-negative integers"},
      {"begin after end", one(R"("a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]})"),
       "data_offsets begin 8 lies after end 0"},
      {"offsets outside the data", one(R"("a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})"),
       "data_offsets [0, 16) lie outside the data area (8 bytes)"},
      {"huge offsets", one(R"("a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551611,18446744073709551615]})"),
       "lie outside the data area"},
      {"overlapping tensors",
       one(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]})"),
       "tensor 'b': data overlaps tensor 'a'"},
      {"metadata not an object", one(R"("__metadata__":"x")"), "__metadata__: must be an object of strings"},
      {"metadata value not a string", one(R"("__metadata__":{"format":1})"),
       "__metadata__ 'format': value must be a string, found 1"},
      {"repeated tensor name",
       one(R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]})"),
       "key 'a': appears twice in the header"},
      {"repeated field in an entry", one(R"("a":{"dtype":"F16","dtype":"F32","shape":[2],"data_offsets":[0,8]})"),
       "key 'dtype': appears twice in the header"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const fs::path path = dir / ("case" + std::to_string(i) + ".safetensors");
    test::write_file(path, cases[i].contents);
    const std::string message = error_of(path);
    CAPTURE(cases[i].what);
    CAPTURE(message);
    CHECK(message.rfind(path.string() + ": ", 0) == 0);
    CHECK(message.find(cases[i].needle) != std::string::npos);
  }
}

TEST_CASE("safetensors: a header over the size limit is refused before it is read") {
  test::ScratchDir dir;
  const fs::path path = dir / "big.safetensors";
  const uint64_t n = 150'000'000;
  test::write_file(path, raw<uint64_t>({n}));
  fs::resize_file(path, 8 + n);  // sparse: costs no disk
  const std::string message = error_of(path);
  CAPTURE(message);
  CHECK(message.find("header length 150000000 exceeds the limit") != std::string::npos);
}

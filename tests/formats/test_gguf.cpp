// GGUF: the reader (header, metadata, tensor infos, validation of hostile files), dequantization
// of each block type, the Hugging Face view (names, config, q/k rows), real tokenizer files and
// the real SmolLM2 model.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "core/quant.hpp"
#include "core/tensor_names.hpp"
#include "formats/gguf_model.hpp"
#include "formats/open_checkpoint.hpp"
#include "tests/common/fixtures.hpp"
#include "tests/common/gguf_writer.hpp"

using namespace upcycle;
using namespace upcycle::test;
namespace fs = std::filesystem;

namespace {

std::string byte_string(std::initializer_list<int> v) {
  std::string s;
  for (int b : v) s += char(uint8_t(b));
  return s;
}

std::vector<float> dequantized(DType t, const std::string& bytes, uint64_t elements) {
  std::vector<float> out(elements);
  dequantize(t, reinterpret_cast<const std::byte*>(bytes.data()), bytes.size(), out.data(), elements);
  return out;
}

float max_abs_error(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  float worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
  return worst;
}

// Opening `bytes` as a GGUF must throw InputError whose message starts with the file's path and
// contains `needle`.
void check_rejected(const std::string& bytes, const std::string& needle) {
  ScratchDir dir;
  const fs::path path = dir / "bad.gguf";
  write_file(path, bytes);
  try {
    GgufFile::open(path);
    FAIL("accepted a malformed file; expected: " << needle);
  } catch (const InputError& e) {
    const std::string msg = e.what();
    CHECK_MESSAGE(msg.rfind(path.string() + ": ", 0) == 0, msg);
    CHECK_MESSAGE(msg.find(needle) != std::string::npos, "expected '" << needle << "' in: " << msg);
  }
}

// A GGUF with one tensor and an architecture key.
std::string one_tensor_file(GgufTensorSpec t, uint32_t version = 3) {
  GgufWriter w;
  w.version = version;
  w.set("general.architecture", gguf_string("llama"));
  w.add_tensor(std::move(t));
  return w.bytes();
}

GgufTensorSpec f32_tensor(std::string name, Shape shape) {
  std::vector<float> v(size_t(*shape_elements(shape)), 1.0f);
  return tensor_from_f32(std::move(name), ggml::F32, std::move(shape), v);
}

// The header of a file with the given counts, then `rest`.
std::string header(uint64_t tensor_count, uint64_t kv_count, const std::string& rest = "") {
  return Bytes().raw("GGUF").u32(3).u64(tensor_count).u64(kv_count).raw(rest).data;
}

// A config with the given width, for quantized models whose rows must be whole blocks.
ModelConfig wide_config(int64_t hidden, int64_t heads, int64_t kv_heads, int64_t intermediate) {
  nlohmann::ordered_json j = tiny_config("llama").to_json();
  j["hidden_size"] = hidden;
  j["num_attention_heads"] = heads;
  j["num_key_value_heads"] = kv_heads;
  j["intermediate_size"] = intermediate;
  j["vocab_size"] = 8;
  return ModelConfig::from_json(j, "<wide_config>");
}

// Every tensor of `ckpt` against the model it was written from, within `tolerance`.
void check_same_values(const Checkpoint& ckpt, const Checkpoint& model, float tolerance) {
  REQUIRE(ckpt.tensors().size() == model.tensors().size());
  for (const TensorInfo& info : model.tensors()) {
    const TensorInfo* got = ckpt.find(info.name);
    REQUIRE_MESSAGE(got != nullptr, info.name);
    CHECK(got->shape == info.shape);
    const float err = max_abs_error(ckpt.load(info.name).to_f32_vector(), model.load(info.name).to_f32_vector());
    CHECK_MESSAGE(err <= tolerance, info.name << ": max error " << err);
  }
}

std::optional<fs::path> tokenizer_file(const char* name) {
  auto dir = test::shared_tokenizers();
  return dir ? std::optional<fs::path>(*dir / name) : std::nullopt;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Dequantization of hand-built blocks: every expected value worked out from the block layouts.

TEST_CASE("gguf dequantize: Q8_0 block, x = d * q") {
  // d = 0.5 (f16 0x3800); q = -128, -1, 0, 1, 127, then 2, 3, ... 28.
  std::string block = byte_string({0x00, 0x38, 0x80, 0xff, 0x00, 0x01, 0x7f});
  for (int i = 5; i < 32; ++i) block += char(i - 3);
  auto x = dequantized(DType::Q8_0, block, 32);
  CHECK(x[0] == -64.0f);
  CHECK(x[1] == -0.5f);
  CHECK(x[2] == 0.0f);
  CHECK(x[3] == 0.5f);
  CHECK(x[4] == 63.5f);
  CHECK(x[5] == 1.0f);
  CHECK(x[31] == 14.0f);
}

TEST_CASE("gguf dequantize: Q4_0 block, low nibbles first, x = d * (q - 8)") {
  // d = 2 (0x4000); byte i = i | (15 - i) << 4: value i is i, value i + 16 is 15 - i.
  std::string block = byte_string({0x00, 0x40});
  for (int i = 0; i < 16; ++i) block += char(i | ((15 - i) << 4));
  auto x = dequantized(DType::Q4_0, block, 32);
  CHECK(x[0] == -16.0f);   // 2 * (0 - 8)
  CHECK(x[8] == 0.0f);     // 2 * (8 - 8)
  CHECK(x[15] == 14.0f);   // 2 * (15 - 8)
  CHECK(x[16] == 14.0f);   // high nibble of byte 0: 15
  CHECK(x[31] == -16.0f);  // high nibble of byte 15: 0
}

TEST_CASE("gguf dequantize: Q4_1 block, x = d * q + m") {
  // d = 0.25 (0x3400), m = -1 (0xbc00); byte i = i | (15 - i) << 4.
  std::string block = byte_string({0x00, 0x34, 0x00, 0xbc});
  for (int i = 0; i < 16; ++i) block += char(i | ((15 - i) << 4));
  auto x = dequantized(DType::Q4_1, block, 32);
  CHECK(x[0] == -1.0f);
  CHECK(x[4] == 0.0f);
  CHECK(x[15] == 2.75f);
  CHECK(x[16] == 2.75f);
  CHECK(x[30] == -0.75f);
}

TEST_CASE("gguf dequantize: Q4_K block, 6-bit scales and mins with their high bits packed apart") {
  // d = 1, dmin = 0.5. Wanted: scales {1, 2, 3, 4, 17, 33, 63, 5}, mins {0, 1, 2, 3, 16, 20, 40, 63}.
  // Bytes 0-3: scale j | (scale j+4 >> 4) << 6; bytes 4-7: min j | (min j+4 >> 4) << 6;
  // bytes 8-11: (scale j+4 & 15) | (min j+4 & 15) << 4.
  std::string block = byte_string({0x00, 0x3c, 0x00, 0x38,                          //
                                 0x41, 0x82, 0xc3, 0x04, 0x40, 0x41, 0x82, 0xc3,  //
                                 0x01, 0x41, 0x8f, 0xf5});
  // Chunk c (bytes 32c..32c+31): low nibbles are sub-block 2c, high nibbles sub-block 2c+1.
  // Byte i of each chunk = (i & 15) | (15 - (i & 15)) << 4.
  for (int c = 0; c < 4; ++c)
    for (int i = 0; i < 32; ++i) block += char((i & 15) | ((15 - (i & 15)) << 4));
  REQUIRE(block.size() == 144);
  auto x = dequantized(DType::Q4_K, block, 256);
  CHECK(x[0] == 0.0f);              // sub-block 0, q 0: 1*1*0 - 0.5*0
  CHECK(x[5] == 5.0f);              // q 5
  CHECK(x[32] == 29.5f);            // sub-block 1, q 15: 2*15 - 0.5*1
  CHECK(x[64 + 31] == 44.0f);       // sub-block 2, q 15: 3*15 - 0.5*2
  CHECK(x[96 + 2] == 50.5f);        // sub-block 3, q 13: 4*13 - 0.5*3
  CHECK(x[128 + 3] == 43.0f);       // sub-block 4, q 3: 17*3 - 0.5*16
  CHECK(x[160 + 1] == 452.0f);      // sub-block 5, q 14: 33*14 - 0.5*20
  CHECK(x[192 + 7] == 421.0f);      // sub-block 6, q 7: 63*7 - 0.5*40
  CHECK(x[224] == 43.5f);           // sub-block 7, q 15: 5*15 - 0.5*63
  CHECK(x[224 + 15] == -31.5f);     // sub-block 7, q 0
}

TEST_CASE("gguf dequantize: Q6_K block, 4 low bits in ql, 2 high bits in qh, x = d * scale * (q - 32)") {
  // ql[l] = l; qh[l] = 0xe4 (bit pairs 0, 1, 2, 3 for the four 32-value groups of each half);
  // scales[s] = s - 8; d = 0.5 (0x3800) at byte 208.
  std::string block;
  for (int l = 0; l < 128; ++l) block += char(l);
  for (int l = 0; l < 64; ++l) block += char(0xe4);
  for (int s = 0; s < 16; ++s) block += char(int8_t(s - 8));
  block += byte_string({0x00, 0x38});
  REQUIRE(block.size() == 210);
  auto x = dequantized(DType::Q6_K, block, 256);
  CHECK(x[0] == 128.0f);          // low nibble of ql[0] = 0, high bits 0: q -32; scale -8
  CHECK(x[17] == 108.5f);         // ql[17] & 15 = 1: q -31; scale -7
  CHECK(x[40] == 24.0f);          // ql[40] & 15 = 8, high bits 1: q 24 - 32 = -8; scale -6
  CHECK(x[70] == 0.0f);           // ql[6] >> 4 = 0, high bits 2: q 32 - 32 = 0
  CHECK(x[100] == -18.0f);        // ql[36] >> 4 = 2, high bits 3: q 50 - 32 = 18; scale -2
  CHECK(x[128] == 0.0f);          // scale 0
  CHECK(x[128 + 64 + 20] == 12.5f);   // ql[84] >> 4 = 5, high bits 2: q 5; scale 5
  CHECK(x[128 + 96 + 4] == 66.0f);    // ql[100] >> 4 = 6, high bits 3: q 22; scale 6
}

TEST_CASE("gguf dequantize: plain types go through convert, sizes are checked") {
  const std::string f16 = byte_string({0x00, 0x3c, 0x00, 0xc0});  // 1, -2
  CHECK(dequantized(DType::F16, f16, 2) == std::vector<float>{1.0f, -2.0f});
  const std::string bf16 = byte_string({0x80, 0x3f, 0x40, 0x40});  // 1, 3
  CHECK(dequantized(DType::BF16, bf16, 2) == std::vector<float>{1.0f, 3.0f});
  std::vector<float> out(32);
  CHECK_THROWS_AS(dequantize(DType::Q8_0, reinterpret_cast<const std::byte*>(f16.data()), 4, out.data(), 32),
                  std::logic_error);
}

TEST_CASE("gguf dequantize: quantize then dequantize stays within each type's error") {
  const std::vector<float> x = random_values(4096, 7);
  struct Case {
    uint32_t type;
    DType dtype;
    float max_error;  // about half a quantization step for values in [-1, 1]
  };
  for (Case c : {Case{ggml::Q8_0, DType::Q8_0, 0.005f}, Case{ggml::Q4_0, DType::Q4_0, 0.075f},
                 Case{ggml::Q4_1, DType::Q4_1, 0.07f}, Case{ggml::Q4_K, DType::Q4_K, 0.08f},
                 Case{ggml::Q6_K, DType::Q6_K, 0.02f}}) {
    CAPTURE(dtype_name(c.dtype));
    const std::string bytes = encode(c.type, x);
    REQUIRE(bytes.size() == *dtype_bytes(c.dtype, x.size()));
    const float err = max_abs_error(dequantized(c.dtype, bytes, x.size()), x);
    CHECK(err <= c.max_error);
    CHECK(err > 0.0f);  // they are lossy: an error of exactly 0 would mean the check is vacuous
  }
}

// ---------------------------------------------------------------------------------------------
// The raw reader

TEST_CASE("gguf reader: tensors of every type round trip through a file") {
  ScratchDir dir;
  const std::vector<float> x = random_values(2 * 512, 3);
  std::vector<float> exact(64);  // multiples of 1/8 in [-4, 4): representable in f16 and bf16
  for (size_t i = 0; i < exact.size(); ++i) exact[i] = float(int(i) - 32) / 8;
  GgufWriter w;
  w.set("general.architecture", gguf_string("llama"));
  w.add_tensor(tensor_from_f32("f32", ggml::F32, {2, 512}, x));
  w.add_tensor(tensor_from_f32("f16", ggml::F16, {4, 16}, exact));
  w.add_tensor(tensor_from_f32("bf16", ggml::BF16, {64}, exact));
  const std::pair<const char*, uint32_t> quantized_types[] = {
      {"q8_0", ggml::Q8_0}, {"q4_0", ggml::Q4_0}, {"q4_1", ggml::Q4_1}, {"q4_k", ggml::Q4_K}, {"q6_k", ggml::Q6_K}};
  for (auto [name, type] : quantized_types) w.add_tensor(tensor_from_f32(name, type, {2, 512}, x));
  w.write(dir / "all.gguf");

  GgufFile f = GgufFile::open(dir / "all.gguf");
  CHECK(f.version() == 3);
  CHECK(f.architecture() == "llama");
  REQUIRE(f.tensors().size() == 8);
  auto load = [&](size_t i) { return f.load_raw(f.tensors()[i]); };
  CHECK(f.tensors()[0].name == "f32");
  CHECK(f.tensors()[0].shape == Shape{2, 512});
  CHECK(load(0).to_f32_vector() == x);
  CHECK(load(1).dtype() == DType::F16);
  CHECK(load(1).shape() == Shape{4, 16});
  CHECK(load(1).to_f32_vector() == exact);
  CHECK(load(2).to_f32_vector() == exact);
  const DType quantized[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q6_K};
  for (size_t i = 3; i < 8; ++i) {
    const GgufTensor& t = f.tensors()[i];
    CAPTURE(t.name);
    CHECK(t.dtype == quantized[i - 3]);
    CHECK(t.offset % 32 == 0);
    CHECK(t.nbytes == *dtype_bytes(t.dtype, 1024));
    CHECK(max_abs_error(load(i).to_f32_vector(), x) < 0.08f);
  }
}

TEST_CASE("gguf reader: metadata of every value type, GGUF v2 and a 64-byte alignment") {
  ScratchDir dir;
  GgufWriter w;
  w.version = 2;
  w.alignment = 64;
  w.set("general.alignment", gguf_u32(64));
  w.set("u8", {gguf_type::U8, byte_string({200})});
  w.set("i8", {gguf_type::I8, byte_string({0xfe})});
  w.set("u16", {gguf_type::U16, byte_string({0x34, 0x12})});
  w.set("i16", {gguf_type::I16, byte_string({0xff, 0xff})});
  w.set("i32", gguf_i32(-70000));
  w.set("u64", gguf_u64((uint64_t(1) << 63) + 5));
  w.set("i64", {gguf_type::I64, Bytes().u64(uint64_t(-5)).data});
  w.set("f32", gguf_f32(0.1f));
  w.set("f64", {gguf_type::F64, byte_string({0, 0, 0, 0, 0, 0, 0xf8, 0x3f})});  // 1.5
  w.set("bool", gguf_bool(true));
  w.set("nested", gguf_array(gguf_type::ARRAY, {gguf_array(gguf_type::U32, {gguf_u32(1), gguf_u32(2)}),
                                                gguf_array(gguf_type::U32, {gguf_u32(3)})}));
  w.set("bad utf8", gguf_string("a\xff" "b\xc3"));
  w.add_tensor(f32_tensor("t0", {3}));
  w.add_tensor(f32_tensor("t1", {5}));
  w.write(dir / "v2.gguf");

  GgufFile f = GgufFile::open(dir / "v2.gguf");
  const nlohmann::json& m = f.metadata();
  CHECK(f.version() == 2);
  CHECK(m["u8"] == 200);
  CHECK(m["i8"] == -2);
  CHECK(m["u16"] == 0x1234);
  CHECK(m["i16"] == -1);
  CHECK(m["i32"] == -70000);
  CHECK(m["u64"].get<uint64_t>() == (uint64_t(1) << 63) + 5);
  CHECK(m["i64"] == -5);
  CHECK(m["f32"].get<double>() == 0.1);  // the shortest decimal, not 0.10000000149011612
  CHECK(m["f64"] == 1.5);
  CHECK(m["bool"] == true);
  CHECK(m["nested"] == nlohmann::json::parse("[[1, 2], [3]]"));
  CHECK(m["bad utf8"] == "a\xef\xbf\xbd" "b\xef\xbf\xbd");  // each bad byte becomes U+FFFD
  CHECK_NOTHROW(m.dump());
  REQUIRE(f.tensors().size() == 2);
  CHECK(f.tensors()[1].offset % 64 == 0);
  CHECK(f.tensors()[1].offset - f.tensors()[0].offset == 64);
  CHECK(f.load_raw(f.tensors()[1]).to_f32_vector() == std::vector<float>(5, 1.0f));
}

TEST_CASE("gguf reader: malformed files are rejected with the file and the problem named") {
  const std::string valid = one_tensor_file(f32_tensor("w", {2, 32}));
  auto with_value = [](uint32_t type, const std::string& bytes) {
    return header(0, 1, Bytes().str("k").u32(type).raw(bytes).data);
  };

  SUBCASE("magic, version, truncation") {
    check_rejected("GGML" + valid.substr(4), "not a GGUF file: magic bytes are 47 47 4d 4c");
    check_rejected(one_tensor_file(f32_tensor("w", {32}), 1), "version 1 is not supported");
    check_rejected(one_tensor_file(f32_tensor("w", {32}), 99), "version 99 is not supported");
    check_rejected(one_tensor_file(f32_tensor("w", {32}), 0x03000000), "big-endian");
    check_rejected(valid.substr(0, 6), "header: truncated: version needs 4 bytes at offset 4");
    check_rejected(valid.substr(0, 20), "header: truncated: kv_count needs 8 bytes at offset 16");
    check_rejected("", "truncated");
    check_rejected(valid.substr(0, valid.size() - 4), "lies outside the file");
  }
  SUBCASE("counts and lengths larger than the file") {
    check_rejected(header(uint64_t(1) << 60, 0), "tensor_count 1152921504606846976 cannot fit");
    check_rejected(header(0, uint64_t(1) << 60), "kv_count 1152921504606846976 cannot fit");
    check_rejected(header(0, 1, Bytes().u64(uint64_t(1) << 60).raw("a key, and more").data),
                   "key/value #0: truncated: key needs 1152921504606846976 bytes");
    check_rejected(with_value(gguf_type::STRING, Bytes().u64(uint64_t(1) << 62).raw("abc").data),
                   "key 'k': truncated: string needs 4611686018427387904 bytes");
    check_rejected(with_value(gguf_type::ARRAY, Bytes().u32(gguf_type::U64).u64(uint64_t(1) << 58).data),
                   "array of 288230376151711744 elements cannot fit");
  }
  SUBCASE("metadata values") {
    check_rejected(with_value(13, "xxxx"), "key 'k': value type 13 is not a GGUF type");
    check_rejected(with_value(gguf_type::BOOL, byte_string({2})), "bool value 2 is neither 0 nor 1");
    Bytes deep;  // arrays of arrays, 100 deep: the bomb has to stop on depth, not on the stack
    for (int i = 0; i < 100; ++i) deep.u32(gguf_type::ARRAY).u64(1);
    deep.u32(gguf_type::U8).u64(0);
    check_rejected(with_value(gguf_type::ARRAY, deep.data), "arrays nest more than 16 levels deep");
    Bytes wide;  // 2^40 empty arrays claimed in a few bytes
    wide.u32(gguf_type::ARRAY).u64(uint64_t(1) << 40).u32(gguf_type::U8).u64(0);
    check_rejected(with_value(gguf_type::ARRAY, wide.data), "cannot fit in the");
    GgufWriter dup;
    dup.set("a", gguf_u32(1));
    dup.set("a", gguf_u32(2));
    check_rejected(dup.bytes(), "key 'a': appears twice");
  }
  SUBCASE("alignment") {
    for (GgufValue bad : {gguf_u32(3), gguf_u32(0), gguf_u64(uint64_t(1) << 40), gguf_string("32")}) {
      GgufWriter w;
      w.set("general.alignment", bad);
      w.add_tensor(f32_tensor("w", {32}));
      check_rejected(w.bytes(), "key 'general.alignment': must be a power of two");
    }
  }
  SUBCASE("tensor dims and types") {
    check_rejected(one_tensor_file(f32_tensor("w", {})), "tensor 'w': n_dims 0 is outside 1 to 4");
    check_rejected(one_tensor_file(f32_tensor("w", {1, 1, 1, 1, 32})), "tensor 'w': n_dims 5 is outside 1 to 4");
    check_rejected(one_tensor_file({"w", ggml::F32, {0, 32}, ""}), "tensor 'w': dimension 1 is 0");
    check_rejected(one_tensor_file({"w", ggml::F32, {int64_t(1) << 40, int64_t(1) << 40}, ""}),
                   "more elements than 64 bits can count");
    check_rejected(one_tensor_file({"w", ggml::F32, {int64_t(1) << 31, int64_t(1) << 31}, ""}),
                   "byte size overflows");
    check_rejected(one_tensor_file({"w", 13, {32}, std::string(176, '\0')}), "ggml type 13 (Q5_K) is not supported");
    check_rejected(one_tensor_file({"w", 1000, {32}, ""}), "ggml type 1000 is not supported");
    check_rejected(one_tensor_file({"w", ggml::Q8_0, {2, 48}, std::string(102, '\0')}),
                   "rows of 48 values are not whole q8_0 blocks of 32");
    check_rejected(one_tensor_file({"w", ggml::Q4_K, {256, 2}, ""}), "rows of 2 values are not whole q4_k blocks");
  }
  SUBCASE("tensor data ranges and names") {
    auto misaligned = f32_tensor("w", {32});
    misaligned.offset = 4;
    check_rejected(one_tensor_file(misaligned), "tensor 'w': offset 4 is not a multiple of the alignment 32");
    auto far = f32_tensor("w", {32});
    far.offset = uint64_t(1) << 40;
    far.data.clear();
    check_rejected(one_tensor_file(far), "tensor 'w': data at offset 1099511627776 (128 bytes");
    auto wrapping = f32_tensor("w", {32});
    wrapping.offset = ~uint64_t(31);  // aligned, and the sum with the data start overflows
    wrapping.data.clear();
    check_rejected(one_tensor_file(wrapping), "lies outside the file");

    GgufWriter overlap;
    overlap.add_tensor(f32_tensor("a", {64}));
    auto b = f32_tensor("b", {32});
    b.offset = 128;  // inside a's 256 bytes
    overlap.add_tensor(b);
    check_rejected(overlap.bytes(), "tensor 'b': data overlaps that of tensor 'a'");

    GgufWriter twice;
    twice.add_tensor(f32_tensor("w", {32}));
    twice.add_tensor(f32_tensor("w", {32}));
    check_rejected(twice.bytes(), "tensor 'w': appears twice");
    check_rejected(one_tensor_file(f32_tensor("", {32})), "tensor #0: has an empty name");
  }
}

TEST_CASE("gguf reader: every truncation and random byte damage gives InputError or a usable file") {
  ScratchDir dir;
  ModelConfig c = wide_config(64, 4, 2, 64);
  auto model = random_checkpoint(c, 11);
  write_gguf_model(*model, dir / "m.gguf", {"llama", ggml::Q4_1});
  const std::string good = read_file(dir / "m.gguf");
  const fs::path path = dir / "damaged.gguf";
  // Opens, and then loads every tensor; only InputError may escape.
  auto survive = [&](const std::string& bytes) {
    write_file(path, bytes);
    try {
      auto ckpt = open_gguf(path);
      for (const TensorInfo& t : ckpt->tensors()) ckpt->load(t.name).to_f32_vector();
      return true;
    } catch (const InputError&) {
      return false;
    }
  };
  REQUIRE(survive(good));
  int opened = 0;
  for (size_t n = 0; n < good.size(); n += 97) opened += survive(good.substr(0, n));
  CHECK(opened == 0);  // every proper prefix cuts off tensor data
  std::mt19937_64 rng(5);
  size_t header_end = good.size();  // damage the header (up to the first tensor's data), where the parser works
  const GgufFile parsed = GgufFile::open(dir / "m.gguf");
  for (const GgufTensor& t : parsed.tensors()) header_end = std::min(header_end, size_t(t.offset));
  for (int trial = 0; trial < 400; ++trial) {
    std::string bytes = good;
    for (int k = 0; k < 4; ++k) bytes[rng() % header_end] = char(rng());
    survive(bytes);
  }
}

// ---------------------------------------------------------------------------------------------
// The Hugging Face view

TEST_CASE("gguf checkpoint: llama q/k rows are put back in Hugging Face order") {
  // One head of four rows: HF rows r0..r3 are stored as r0, r2, r1, r3 (halves interleaved).
  const std::vector<float> hf = {0, 0, 1, 1, 2, 2, 3, 3};
  CHECK(interleave_rope_rows(hf, 1, 4, 2) == std::vector<float>{0, 0, 2, 2, 1, 1, 3, 3});
  // Two heads of four rows.
  const std::vector<float> two = {0, 1, 2, 3, 4, 5, 6, 7};
  CHECK(interleave_rope_rows(two, 2, 8, 1) == std::vector<float>{0, 2, 1, 3, 4, 6, 5, 7});

  ScratchDir dir;
  const ModelConfig c = tiny_config("llama");
  auto model = random_checkpoint(c, 21);
  write_gguf_model(*model, dir / "llama.gguf");
  auto ckpt = open_gguf(dir / "llama.gguf");
  CHECK(ckpt->format() == "gguf");
  check_tensors_match_config(*ckpt);
  check_same_values(*ckpt, *model, 0.0f);  // f32: exact, q and k included

  // The file really holds permuted rows: its q differs from the HF q.
  GgufFile raw = GgufFile::open(dir / "llama.gguf");
  const std::string q = tensor_name({Role::Q, 1}, Scheme::GGUF);
  auto it = std::find_if(raw.tensors().begin(), raw.tensors().end(), [&](auto& t) { return t.name == q; });
  REQUIRE(it != raw.tensors().end());
  CHECK(raw.load_raw(*it).to_f32_vector() != model->load(tensor_name({Role::Q, 1}, Scheme::HF)).to_f32_vector());
}

TEST_CASE("gguf checkpoint: quantized and f16 llama files load as f32 / f16 in Hugging Face layout") {
  ScratchDir dir;
  SUBCASE("Q8_0") {
    auto model = random_checkpoint(wide_config(64, 4, 2, 96), 31);
    write_gguf_model(*model, dir / "q8.gguf", {"llama", ggml::Q8_0});
    auto ckpt = open_gguf(dir / "q8.gguf");
    const TensorInfo* q = ckpt->find(tensor_name({Role::Q, 0}, Scheme::HF));
    REQUIRE(q != nullptr);
    CHECK(q->dtype == DType::F32);
    CHECK(q->stored == DType::Q8_0);
    CHECK(ckpt->find(tensor_name({Role::AttnNorm, 0}, Scheme::HF))->stored == std::nullopt);
    CHECK(ckpt->stored_bytes() < ckpt->parameter_count() * 2);
    check_same_values(*ckpt, *model, 0.005f);  // a wrong row order would be off by ~1
  }
  SUBCASE("Q4_K and Q6_K rows of 256") {
    auto model = random_checkpoint(wide_config(256, 2, 1, 256), 41);
    write_gguf_model(*model, dir / "q4k.gguf", {"llama", ggml::Q4_K});
    check_same_values(*open_gguf(dir / "q4k.gguf"), *model, 0.08f);
    write_gguf_model(*model, dir / "q6k.gguf", {"llama", ggml::Q6_K});
    check_same_values(*open_gguf(dir / "q6k.gguf"), *model, 0.02f);
  }
  SUBCASE("F16 keeps its dtype") {
    auto model = random_checkpoint(tiny_config("llama"), 51, DType::F16);
    write_gguf_model(*model, dir / "f16.gguf", {"llama", ggml::F16});
    auto ckpt = open_gguf(dir / "f16.gguf");
    const std::string k = tensor_name({Role::K, 1}, Scheme::HF);
    CHECK(ckpt->find(k)->dtype == DType::F16);
    CHECK(ckpt->load(k).dtype() == DType::F16);
    CHECK(same_tensor(ckpt->load(k), model->load(k)));  // bit exact, rows unpermuted
    check_same_values(*ckpt, *model, 0.0f);
  }
}

TEST_CASE("gguf checkpoint: qwen2 rows are not permuted and biases come through") {
  ScratchDir dir;
  auto model = random_checkpoint(tiny_config("qwen2"), 61);
  write_gguf_model(*model, dir / "qwen.gguf", {"qwen2", ggml::F32});
  auto ckpt = open_gguf(dir / "qwen.gguf");
  CHECK(ckpt->config().model_type == "qwen2");
  CHECK(ckpt->config().raw["architectures"] == nlohmann::ordered_json::array({"Qwen2ForCausalLM"}));
  CHECK(ckpt->config().attention_bias);
  check_tensors_match_config(*ckpt);
  check_same_values(*ckpt, *model, 0.0f);
}

TEST_CASE("gguf checkpoint: per-expert MoE files become Mixtral") {
  ScratchDir dir;
  auto model = random_checkpoint(tiny_config("mixtral"), 71);
  write_gguf_model(*model, dir / "moe.gguf");
  auto ckpt = open_gguf(dir / "moe.gguf");
  const ModelConfig& c = ckpt->config();
  CHECK(c.model_type == "mixtral");
  CHECK(c.num_local_experts == 4);
  CHECK(c.num_experts_per_tok == 2);
  CHECK(c.raw["architectures"] == nlohmann::ordered_json::array({"MixtralForCausalLM"}));
  check_tensors_match_config(*ckpt);
  check_same_values(*ckpt, *model, 0.0f);
}

TEST_CASE("gguf config: Hugging Face fields from llama.cpp keys") {
  ScratchDir dir;
  SUBCASE("written from a config, untied and tied") {
    for (bool tied : {false, true}) {
      const ModelConfig want = tiny_config("llama", tied);
      write_gguf_model(*random_checkpoint(want, 81), dir / "m.gguf");
      const ModelConfig c = config_from_gguf(GgufFile::open(dir / "m.gguf"));
      CHECK(c.model_type == "llama");
      CHECK(c.vocab_size == 40);  // counted from the token list: no vocab_size key
      CHECK(c.hidden_size == 16);
      CHECK(c.intermediate_size == 24);
      CHECK(c.num_hidden_layers == 2);
      CHECK(c.num_attention_heads == 4);
      CHECK(c.num_key_value_heads == 2);
      CHECK(c.head_dim == 4);
      CHECK(c.max_position_embeddings == 64);
      CHECK(c.rms_norm_eps == 1e-5);  // exactly: f32 read back as its shortest decimal
      CHECK(c.rope_theta == 10000.0);
      CHECK(c.tie_word_embeddings == tied);
      CHECK_FALSE(c.attention_bias);
      CHECK(c.raw["architectures"] == nlohmann::ordered_json::array({"LlamaForCausalLM"}));
      CHECK(c.raw["bos_token_id"] == 1);
      CHECK(c.raw["eos_token_id"] == 2);
      CHECK(c.raw["torch_dtype"] == "float32");
      CHECK_FALSE(c.raw.contains("head_dim"));
    }
  }
  SUBCASE("explicit head_dim, vocab_size key, rope scaling, mistral's sliding window") {
    GgufWriter w;
    w.set("general.architecture", gguf_string("mistral"));
    w.set("mistral.block_count", gguf_u32(2));
    w.set("mistral.embedding_length", gguf_u32(64));
    w.set("mistral.feed_forward_length", gguf_u32(96));
    w.set("mistral.attention.head_count", gguf_u32(4));
    w.set("mistral.attention.head_count_kv", gguf_u32(1));
    w.set("mistral.rope.dimension_count", gguf_u32(32));
    w.set("mistral.vocab_size", gguf_u32(1000));
    w.set("mistral.context_length", gguf_u32(32768));
    w.set("mistral.rope.scaling.type", gguf_string("linear"));
    w.set("mistral.rope.scaling.factor", gguf_f32(4.0f));
    w.set("mistral.rope.scaling.original_context_length", gguf_u32(8192));
    w.write(dir / "m.gguf");
    const ModelConfig c = config_from_gguf(GgufFile::open(dir / "m.gguf"));
    CHECK(c.model_type == "mistral");
    CHECK(c.head_dim == 32);
    CHECK(c.q_dim() == 128);
    CHECK(c.vocab_size == 1000);
    CHECK(c.max_position_embeddings == 32768);
    CHECK_FALSE(c.sliding_window.has_value());  // null, not transformers' 4096 default
    CHECK(c.rope_scaling == nlohmann::ordered_json::parse(
                                R"({"rope_type": "linear", "factor": 4.0, "original_max_position_embeddings": 8192})"));
    CHECK(c.raw["architectures"] == nlohmann::ordered_json::array({"MistralForCausalLM"}));
    CHECK(c.tie_word_embeddings);  // no output tensor
  }
  SUBCASE("errors name the file and the key") {
    auto rejected = [&](GgufWriter w, const std::string& needle) {
      w.write(dir / "bad.gguf");
      try {
        config_from_gguf(GgufFile::open(dir / "bad.gguf"));
        FAIL("accepted: " << needle);
      } catch (const InputError& e) {
        const std::string msg = e.what();
        CHECK(msg.rfind((dir / "bad.gguf").string() + ": ", 0) == 0);
        CHECK_MESSAGE(msg.find(needle) != std::string::npos, msg);
      }
    };
    GgufWriter gpt2;
    gpt2.set("general.architecture", gguf_string("gpt2"));
    rejected(gpt2, "'gpt2' is not supported");
    rejected(GgufWriter(), "key 'general.architecture': missing");
    GgufWriter wrong_type;
    wrong_type.set("general.architecture", gguf_string("llama"));
    wrong_type.set("llama.embedding_length", gguf_string("576"));
    rejected(wrong_type, "key 'llama.embedding_length': must be an integer, found string");
    GgufWriter missing;
    missing.set("general.architecture", gguf_string("llama"));
    missing.set("llama.embedding_length", gguf_u32(64));
    rejected(missing, "key 'llama.attention.head_count': missing");
    GgufWriter yarn;  // a scaling we do not compute is refused, not misread
    yarn.set("general.architecture", gguf_string("llama"));
    yarn.set("llama.block_count", gguf_u32(2));
    yarn.set("llama.embedding_length", gguf_u32(64));
    yarn.set("llama.feed_forward_length", gguf_u32(96));
    yarn.set("llama.attention.head_count", gguf_u32(4));
    yarn.set("llama.vocab_size", gguf_u32(100));
    yarn.set("llama.rope.scaling.type", gguf_string("yarn"));
    yarn.set("llama.rope.scaling.factor", gguf_f32(4.0f));
    rejected(yarn, "type 'yarn' is not supported");
    GgufWriter invalid;  // through ModelConfig's validation
    invalid.set("general.architecture", gguf_string("llama"));
    for (auto key : {"block_count", "embedding_length", "feed_forward_length", "attention.head_count", "vocab_size"})
      invalid.set(std::string("llama.") + key, gguf_u32(16));
    invalid.set("llama.attention.head_count_kv", gguf_u32(3));
    rejected(invalid, "num_key_value_heads");
  }
}

TEST_CASE("gguf checkpoint: tensors without a Hugging Face name, or experts in a dense model, are rejected by name") {
  ScratchDir dir;
  auto model = random_checkpoint(tiny_config("llama"), 91);
  write_gguf_model(*model, dir / "m.gguf");
  GgufFile ok = GgufFile::open(dir / "m.gguf");
  GgufWriter w;  // the same hyperparameters, plus a merged-experts tensor
  for (const auto& [key, value] : ok.metadata().items())
    if (value.is_number_unsigned()) w.set(key, gguf_u32(value.get<uint32_t>()));
    else if (value.is_string()) w.set(key, gguf_string(value.get<std::string>()));
  w.set("tokenizer.ggml.tokens", gguf_strings(std::vector<std::string>(40, "t")));
  GgufWriter experts = w;
  w.add_tensor(f32_tensor("blk.0.ffn_gate_mixed.weight", {4, 24, 16}));
  w.write(dir / "bad.gguf");
  experts.add_tensor(f32_tensor("blk.0.ffn_gate_exps.weight", {4, 24, 16}));  // stacked experts, no expert_count
  experts.write(dir / "experts.gguf");
  const std::pair<const char*, const char*> cases[] = {
      {"bad.gguf", "tensor 'blk.0.ffn_gate_mixed.weight': not a tensor of the llama"},
      {"experts.gguf", "tensor 'blk.0.ffn_gate_exps.weight': holds experts, but the file has no expert_count"}};
  for (const auto& [file, message] : cases) {
    CAPTURE(file);
    try {
      open_gguf(dir / file);
      FAIL("accepted a tensor the model cannot have");
    } catch (const InputError& e) {
      CHECK(std::string(e.what()).find(message) != std::string::npos);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Real files

TEST_CASE("gguf reader: tokenizer-only files from llama.cpp open with their metadata") {
  if (auto path = tokenizer_file("ggml-vocab-gpt-2.gguf")) {
    GgufFile f = GgufFile::open(*path);
    CHECK(f.version() == 3);
    CHECK(f.tensors().empty());
    CHECK(f.architecture() == "gpt2");
    const auto& m = f.metadata();
    CHECK(m["tokenizer.ggml.model"] == "gpt2");
    CHECK(m["tokenizer.ggml.tokens"].size() == 50257);
    CHECK(m["tokenizer.ggml.tokens"][0] == "!");
    CHECK(m["tokenizer.ggml.merges"].size() == 50000);
    CHECK(m["tokenizer.ggml.bos_token_id"] == 50256);
    CHECK(m["gpt2.attention.layer_norm_epsilon"].get<double>() == 1e-5);
    CHECK_NOTHROW(m.dump());
    CHECK_THROWS_AS(config_from_gguf(f), InputError);  // gpt2 is not a model we map
  }
  if (auto path = tokenizer_file("ggml-vocab-llama-spm.gguf")) {
    GgufFile f = GgufFile::open(*path);
    const auto& m = f.metadata();
    CHECK(m["tokenizer.ggml.model"] == "llama");
    CHECK(m["tokenizer.ggml.tokens"].size() == 32000);
    CHECK(m["tokenizer.ggml.tokens"][3] == "<0x00>");
    CHECK(m["tokenizer.ggml.scores"].size() == 32000);
    CHECK(m["tokenizer.ggml.token_type"][0] == 2);  // <unk>: UNKNOWN
    CHECK(m["tokenizer.ggml.add_bos_token"] == true);
    const ModelConfig c = config_from_gguf(f);  // its hyperparameters are Llama-2 7B's
    CHECK(c.hidden_size == 4096);
    CHECK(c.vocab_size == 32000);
    CHECK(c.head_dim == 128);
  }
}

TEST_CASE("gguf checkpoint: the real SmolLM2-135M-Instruct Q4_1 file") {
  auto path = smollm2_gguf();
  if (!path) {
    MESSAGE("skipped: SmolLM2 GGUF absent (set UPCYCLE_SMOLLM2_GGUF)");
    return;
  }
  auto ckpt = open_checkpoint(*path);  // also checks every tensor against the config
  const ModelConfig& c = ckpt->config();
  CHECK(c.model_type == "llama");
  CHECK(c.num_hidden_layers == 30);
  CHECK(c.hidden_size == 576);
  CHECK(c.num_attention_heads == 9);
  CHECK(c.num_key_value_heads == 3);
  CHECK(c.head_dim == 64);
  CHECK(c.vocab_size == 49152);
  CHECK(c.intermediate_size == 1536);
  CHECK(c.tie_word_embeddings);
  CHECK(c.rope_theta == 100000.0);
  CHECK(c.rms_norm_eps == 1e-5);
  CHECK(c.max_position_embeddings == 8192);
  CHECK(ckpt->tensors().size() == 272);
  CHECK(ckpt->tensors().front().name == tensor_name({Role::TokenEmbedding}, Scheme::HF));
  const TensorInfo* embed = ckpt->find(tensor_name({Role::TokenEmbedding}, Scheme::HF));
  CHECK(embed->stored == DType::Q8_0);
  CHECK(embed->shape == Shape{49152, 576});
  CHECK(ckpt->find(tensor_name({Role::Down, 29}, Scheme::HF))->stored == DType::Q4_1);

  // k of layer 3 against the file's rows, unpermuted here by the formula: GGUF row h*64 + 2j + s
  // is HF row h*64 + 32s + j.
  GgufFile raw = GgufFile::open(*path);
  const std::string gguf_k = tensor_name({Role::K, 3}, Scheme::GGUF);
  auto it = std::find_if(raw.tensors().begin(), raw.tensors().end(), [&](auto& t) { return t.name == gguf_k; });
  REQUIRE(it != raw.tensors().end());
  const std::vector<float> file_rows = raw.load_raw(*it).to_f32_vector();
  const std::vector<float> hf = ckpt->load(tensor_name({Role::K, 3}, Scheme::HF)).to_f32_vector();
  REQUIRE(hf.size() == 192 * 576);
  bool all_equal = true;
  for (int h = 0; h < 3; ++h)
    for (int j = 0; j < 32; ++j)
      for (int s = 0; s < 2; ++s)
        all_equal &= std::memcmp(&file_rows[size_t(h * 64 + 2 * j + s) * 576], &hf[size_t(h * 64 + 32 * s + j) * 576],
                                 576 * sizeof(float)) == 0;
  CHECK(all_equal);
  const Tensor norm = ckpt->load(tensor_name({Role::FinalNorm}, Scheme::HF));
  CHECK(norm.dtype() == DType::F32);
  CHECK(norm.shape() == Shape{576});
}

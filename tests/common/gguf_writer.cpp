#include "tests/common/gguf_writer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "core/tensor_names.hpp"

namespace upcycle::test {

// ---------------------------------------------------------------------------------------------
// Bytes and values

namespace {
template <class T>
void append(std::string& out, T v) {
  char buf[sizeof v];
  std::memcpy(buf, &v, sizeof v);  // little-endian host, as the reader assumes
  out.append(buf, sizeof v);
}
}  // namespace

Bytes& Bytes::raw(std::string_view s) { data.append(s); return *this; }
Bytes& Bytes::u8(uint8_t v) { append(data, v); return *this; }
Bytes& Bytes::u16(uint16_t v) { append(data, v); return *this; }
Bytes& Bytes::u32(uint32_t v) { append(data, v); return *this; }
Bytes& Bytes::i32(int32_t v) { append(data, v); return *this; }
Bytes& Bytes::u64(uint64_t v) { append(data, v); return *this; }
Bytes& Bytes::f32(float v) { append(data, v); return *this; }
Bytes& Bytes::str(std::string_view s) { return u64(s.size()).raw(s); }

GgufValue gguf_u32(uint32_t v) { return {gguf_type::U32, Bytes().u32(v).data}; }
GgufValue gguf_i32(int32_t v) { return {gguf_type::I32, Bytes().i32(v).data}; }
GgufValue gguf_u64(uint64_t v) { return {gguf_type::U64, Bytes().u64(v).data}; }
GgufValue gguf_f32(float v) { return {gguf_type::F32, Bytes().f32(v).data}; }
GgufValue gguf_bool(bool v) { return {gguf_type::BOOL, Bytes().u8(v ? 1 : 0).data}; }
GgufValue gguf_string(std::string_view s) { return {gguf_type::STRING, Bytes().str(s).data}; }

GgufValue gguf_array(uint32_t element_type, const std::vector<GgufValue>& elements) {
  Bytes b;
  b.u32(element_type).u64(elements.size());
  for (const GgufValue& e : elements) b.raw(e.bytes);
  return {gguf_type::ARRAY, b.data};
}

GgufValue gguf_strings(const std::vector<std::string>& strings) {
  std::vector<GgufValue> elements;
  for (const std::string& s : strings) elements.push_back(gguf_string(s));
  return gguf_array(gguf_type::STRING, elements);
}

// ---------------------------------------------------------------------------------------------
// The file

void GgufWriter::set(std::string key, GgufValue value) { kvs_.emplace_back(std::move(key), std::move(value)); }
void GgufWriter::add_tensor(GgufTensorSpec tensor) { tensors_.push_back(std::move(tensor)); }

std::string GgufWriter::bytes() const {
  auto align_up = [&](uint64_t n) { return (n + alignment - 1) / alignment * alignment; };
  Bytes b;
  b.raw("GGUF").u32(version).u64(tensors_.size()).u64(kvs_.size());
  for (const auto& [key, value] : kvs_) b.str(key).u32(value.type).raw(value.bytes);

  std::vector<uint64_t> offsets;
  uint64_t next = 0, data_end = 0;
  for (const GgufTensorSpec& t : tensors_) {
    const uint64_t offset = t.offset.value_or(align_up(next));
    if (!t.offset) next = offset + t.data.size();
    // Only tensors with bytes extend the data: a test may point an empty one far outside.
    if (!t.data.empty()) data_end = std::max(data_end, offset + t.data.size());
    offsets.push_back(offset);
    b.str(t.name).u32(uint32_t(t.shape.size()));
    for (auto d = t.shape.rbegin(); d != t.shape.rend(); ++d) b.u64(uint64_t(*d));
    b.u32(t.type).u64(offset);
  }
  b.data.resize(align_up(b.data.size()), '\0');
  std::string data(data_end, '\0');
  for (size_t i = 0; i < tensors_.size(); ++i)
    if (!tensors_[i].data.empty()) data.replace(offsets[i], tensors_[i].data.size(), tensors_[i].data);
  return b.data + data;
}

void GgufWriter::write(const std::filesystem::path& path) const {
  const std::string all = bytes();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(all.data(), std::streamsize(all.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

// ---------------------------------------------------------------------------------------------
// Quantizers

namespace {

// A scale as the file stores it (f16) and as a decoder reads it back.
float stored_f16(Bytes& b, float v) {
  const uint16_t h = f32_to_f16(v);
  b.u16(h);
  return f16_to_f32(h);
}

int nearest(float v, int lo, int hi) { return std::clamp(int(std::lround(v)), lo, hi); }

// Q8_0: d = max|x| / 127, q = round(x / d).
void encode_q8_0(Bytes& b, std::span<const float> x) {
  float amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  const float d = stored_f16(b, amax / 127);
  for (float v : x) b.u8(uint8_t(int8_t(d == 0 ? 0 : nearest(v / d, -127, 127))));
}

// 32 nibbles into 16 bytes: value i low, value i + 16 high.
void pack_nibbles(Bytes& b, const int q[32]) {
  for (int i = 0; i < 16; ++i) b.u8(uint8_t(q[i] | (q[i + 16] << 4)));
}

// Q4_0: d = max|x| / 7, q = round(x / d) + 8.
void encode_q4_0(Bytes& b, std::span<const float> x) {
  float amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  const float d = stored_f16(b, amax / 7);
  int q[32];
  for (int i = 0; i < 32; ++i) q[i] = d == 0 ? 8 : nearest(x[i] / d + 8, 0, 15);
  pack_nibbles(b, q);
}

// Q4_1: m = min, d = (max - min) / 15, q = round((x - m) / d).
void encode_q4_1(Bytes& b, std::span<const float> x) {
  const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
  const float d = stored_f16(b, (*hi - *lo) / 15);
  const float m = stored_f16(b, *lo);
  int q[32];
  for (int i = 0; i < 32; ++i) q[i] = d == 0 ? 0 : nearest((x[i] - m) / d, 0, 15);
  pack_nibbles(b, q);
}

// Q4_K: per sub-block of 32, a range [-min, -min + 15 * scale] with min >= 0; the eight scales
// and mins as 6-bit multiples of the block's d and dmin.
void encode_q4_k(Bytes& b, std::span<const float> x) {
  float scale[8], min[8];
  for (int s = 0; s < 8; ++s) {
    const auto [lo, hi] = std::minmax_element(x.begin() + 32 * s, x.begin() + 32 * s + 32);
    min[s] = -std::min(*lo, 0.0f);
    scale[s] = (*hi + min[s]) / 15;
  }
  const float d = stored_f16(b, *std::max_element(scale, scale + 8) / 63);
  const float dmin = stored_f16(b, *std::max_element(min, min + 8) / 63);
  int sc[8], m[8];
  for (int s = 0; s < 8; ++s) {
    sc[s] = d == 0 ? 0 : nearest(scale[s] / d, 0, 63);
    m[s] = dmin == 0 ? 0 : nearest(min[s] / dmin, 0, 63);
  }
  for (int j = 0; j < 4; ++j) b.u8(uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6)));
  for (int j = 0; j < 4; ++j) b.u8(uint8_t(m[j] | ((m[j + 4] >> 4) << 6)));
  for (int j = 0; j < 4; ++j) b.u8(uint8_t((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4)));
  int q[256];
  for (int i = 0; i < 256; ++i) {
    const float step = d * float(sc[i / 32]);
    q[i] = step == 0 ? 0 : nearest((x[i] + dmin * float(m[i / 32])) / step, 0, 15);
  }
  for (int c = 0; c < 4; ++c)
    for (int i = 0; i < 32; ++i) b.u8(uint8_t(q[64 * c + i] | (q[64 * c + 32 + i] << 4)));
}

// Q6_K: per sub-block of 16, scale = max|x| / 31 as an 8-bit multiple of the block's d; q + 32 in
// six bits, split into ql (low four) and qh (high two).
void encode_q6_k(Bytes& b, std::span<const float> x) {
  float scale[16];
  for (int s = 0; s < 16; ++s) {
    float amax = 0;
    for (int i = 0; i < 16; ++i) amax = std::max(amax, std::fabs(x[16 * s + i]));
    scale[s] = amax / 31;
  }
  const uint16_t d_bits = f32_to_f16(*std::max_element(scale, scale + 16) / 127);
  const float d = f16_to_f32(d_bits);
  int sc[16], q[256];
  for (int s = 0; s < 16; ++s) sc[s] = d == 0 ? 0 : nearest(scale[s] / d, -127, 127);
  for (int i = 0; i < 256; ++i) {
    const float step = d * float(sc[i / 16]);
    q[i] = (step == 0 ? 0 : nearest(x[i] / step, -32, 31)) + 32;
  }
  uint8_t ql[128] = {}, qh[64] = {};
  for (int half = 0; half < 2; ++half)
    for (int k = 0; k < 4; ++k)
      for (int i = 0; i < 32; ++i) {
        const int v = q[128 * half + 32 * k + i];
        ql[64 * half + 32 * (k & 1) + i] |= uint8_t((v & 15) << (k < 2 ? 0 : 4));
        qh[32 * half + i] |= uint8_t((v >> 4) << (2 * k));
      }
  b.raw({reinterpret_cast<const char*>(ql), 128}).raw({reinterpret_cast<const char*>(qh), 64});
  for (int s = 0; s < 16; ++s) b.u8(uint8_t(int8_t(sc[s])));
  b.u16(d_bits);
}

}  // namespace

std::string encode(uint32_t type, std::span<const float> x) {
  Bytes b;
  auto blocks = [&](size_t n, void (*block)(Bytes&, std::span<const float>)) {
    if (x.size() % n != 0) throw std::invalid_argument("encode: values are not whole blocks");
    for (size_t i = 0; i < x.size(); i += n) block(b, x.subspan(i, n));
  };
  switch (type) {
    case ggml::F32: for (float v : x) b.f32(v); break;
    case ggml::F16: for (float v : x) b.u16(f32_to_f16(v)); break;
    case ggml::BF16: for (float v : x) b.u16(f32_to_bf16(v)); break;
    case ggml::Q8_0: blocks(32, encode_q8_0); break;
    case ggml::Q4_0: blocks(32, encode_q4_0); break;
    case ggml::Q4_1: blocks(32, encode_q4_1); break;
    case ggml::Q4_K: blocks(256, encode_q4_k); break;
    case ggml::Q6_K: blocks(256, encode_q6_k); break;
    default: throw std::invalid_argument("encode: no encoder for ggml type " + std::to_string(type));
  }
  return b.data;
}

GgufTensorSpec tensor_from_f32(std::string name, uint32_t type, Shape shape, std::span<const float> values) {
  return {std::move(name), type, std::move(shape), encode(type, values)};
}

std::vector<float> interleave_rope_rows(std::span<const float> hf, int64_t heads, int64_t rows, int64_t cols) {
  const int64_t head_rows = rows / heads, half = head_rows / 2;
  std::vector<float> out(hf.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t s = 0; s < 2; ++s)
      for (int64_t j = 0; j < half; ++j) {
        const int64_t from = h * head_rows + s * half + j, to = h * head_rows + 2 * j + s;
        std::copy_n(hf.begin() + from * cols, cols, out.begin() + to * cols);
      }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Whole models

namespace {

void set_hyperparameters(GgufWriter& w, const ModelConfig& c, const std::string& arch) {
  const std::string p = arch + ".";
  w.set("general.architecture", gguf_string(arch));
  w.set(p + "block_count", gguf_u32(uint32_t(c.num_hidden_layers)));
  w.set(p + "context_length", gguf_u32(uint32_t(c.max_position_embeddings)));
  w.set(p + "embedding_length", gguf_u32(uint32_t(c.hidden_size)));
  w.set(p + "feed_forward_length", gguf_u32(uint32_t(c.intermediate_size)));
  w.set(p + "attention.head_count", gguf_u32(uint32_t(c.num_attention_heads)));
  w.set(p + "attention.head_count_kv", gguf_u32(uint32_t(c.num_key_value_heads)));
  w.set(p + "attention.layer_norm_rms_epsilon", gguf_f32(float(c.rms_norm_eps)));
  w.set(p + "rope.freq_base", gguf_f32(float(c.rope_theta)));
  w.set(p + "rope.dimension_count", gguf_u32(uint32_t(c.head_dim)));
  if (c.is_moe()) {
    w.set(p + "expert_count", gguf_u32(uint32_t(c.num_local_experts)));
    w.set(p + "expert_used_count", gguf_u32(uint32_t(c.num_experts_per_tok)));
  }
  std::vector<std::string> tokens;
  for (int64_t i = 0; i < c.vocab_size; ++i) tokens.push_back(std::string("t").append(std::to_string(i)));
  w.set("tokenizer.ggml.model", gguf_string("gpt2"));
  w.set("tokenizer.ggml.tokens", gguf_strings(tokens));
  w.set("tokenizer.ggml.bos_token_id", gguf_u32(1));
  w.set("tokenizer.ggml.eos_token_id", gguf_u32(2));
}

// The heads whose rows llama.cpp interleaves in this tensor; 0 when it leaves the rows alone.
int64_t rope_heads(Role role, const ModelConfig& c) {
  if (role == Role::Q || role == Role::QBias) return c.num_attention_heads;
  if (role == Role::K || role == Role::KBias) return c.num_key_value_heads;
  return 0;
}

}  // namespace

void write_gguf_model(const Checkpoint& model, const std::filesystem::path& path, const GgufModelOptions& opts) {
  const ModelConfig& c = model.config();
  GgufWriter w;
  set_hyperparameters(w, c, opts.architecture);
  for (const TensorInfo& info : model.tensors()) {
    auto id = parse_tensor_name(info.name, Scheme::HF);
    if (!id) throw std::invalid_argument("write_gguf_model: no GGUF name for " + info.name);
    std::vector<float> values = model.load(info.name).to_f32_vector();
    const int64_t rows = info.shape[0], cols = int64_t(values.size()) / rows;
    if (const int64_t heads = rope_heads(id->role, c); heads > 0 && opts.architecture == "llama")
      values = interleave_rope_rows(values, heads, rows, cols);
    const uint32_t type = info.shape.size() >= 2 ? opts.weight_type : ggml::F32;
    w.add_tensor(tensor_from_f32(tensor_name(*id, Scheme::GGUF), type, info.shape, values));
  }
  w.write(path);
}

}  // namespace upcycle::test

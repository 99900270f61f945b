// GGUF v2/v3 files: the header, metadata and tensor infos, each checked against the bytes the
// file still holds before anything is sized by it. (The model view is in gguf_model.cpp.)
#include "core/gguf_file.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <span>
#include <stdexcept>
#include <unordered_set>

#include "core/error.hpp"

namespace upcycle {

namespace fs = std::filesystem;
using json = nlohmann::json;

static_assert(std::endian::native == std::endian::little, "GGUF fields are read by copying little-endian bytes");

namespace {

constexpr uint64_t kDefaultAlignment = 32;
constexpr int kMaxArrayDepth = 16;
constexpr uint64_t kMaxMetadataValues = uint64_t(1) << 24;
constexpr uint64_t kMaxKeyBytes = 65535;  // the spec's limit
constexpr uint32_t kMaxDims = 4;          // GGML_MAX_DIMS
// The fewest bytes one key/value (key length, a key byte, value type, a value byte) and one
// tensor info (name length, a name byte, n_dims, one dim, type, offset) can take: counts in the
// header are checked against these before any loop or allocation trusts them.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;

// ---------------------------------------------------------------------------------------------
// Bounds-checked reads

// Little-endian reads over the header bytes; a read past the end names the file, what was being
// read (a key, a tensor) and the offset.
class Reader {
 public:
  Reader(std::span<const std::byte> bytes, const fs::path& path) : bytes_(bytes), path_(path) {}
  const fs::path& path() const { return path_; }
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return bytes_.size() - pos_; }

  template <class T>
  T scalar(const std::string& where, const char* what) {
    T v;
    std::memcpy(&v, take(sizeof v, where, what), sizeof v);
    return v;
  }
  std::string_view bytes(uint64_t n, const std::string& where, const char* what) {
    return {reinterpret_cast<const char*>(take(n, where, what)), size_t(n)};
  }
  // A GGUF string: u64 length, then that many bytes.
  std::string_view string(const std::string& where, const char* what) {
    return bytes(scalar<uint64_t>(where, what), where, what);
  }

 private:
  const std::byte* take(uint64_t n, const std::string& where, const char* what) {
    if (n > left())
      throw InputError(path_, where,
                       std::string("truncated: ") + what + " needs " + std::to_string(n) + " bytes at offset " +
                           std::to_string(pos_) + " but the file has " + std::to_string(left()) + " left");
    const std::byte* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  std::span<const std::byte> bytes_;
  const fs::path& path_;
  uint64_t pos_ = 0;
};

// Length of the valid UTF-8 sequence starting at s[i], or 0 when the bytes there are not one
// (stray continuation bytes, overlong forms, surrogates, code points above U+10FFFF).
size_t utf8_sequence(std::string_view s, size_t i) {
  auto byte = [&](size_t k) { return uint8_t(s[k]); };
  const uint8_t c = byte(i);
  if (c < 0x80) return 1;
  const size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
  if (n == 0 || n > s.size() - i) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  const uint8_t c1 = byte(i + 1);
  if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 > 0x8f))
    return 0;
  return n;
}

// s as a std::string, each byte that starts no valid UTF-8 sequence replaced by U+FFFD, so the
// metadata always dumps (nlohmann::json throws on invalid UTF-8).
std::string valid_utf8(std::string_view s) {
  std::string out;
  size_t done = 0;
  for (size_t i = 0; i < s.size();) {
    if (size_t n = utf8_sequence(s, i)) {
      i += n;
      continue;
    }
    out.append(s.substr(done, i - done)).append("\xef\xbf\xbd");
    done = ++i;
  }
  return out.append(s.substr(done));
}

// The shortest decimal that reads back as f, as a double: GGUF stores hyperparameters as f32, and
// 1e-05 is what the model's authors wrote, not 9.999999747378752e-06.
double shortest_double(float f) {
  if (!std::isfinite(f)) return f;
  char buf[32];
  const auto printed = std::to_chars(buf, buf + sizeof buf, f);
  double d = f;
  std::from_chars(buf, printed.ptr, d);
  return float(d) == f ? d : double(f);  // in case the double would round to another float
}

// ---------------------------------------------------------------------------------------------
// Header and metadata

struct Header {
  uint32_t version;
  uint64_t tensor_count, kv_count;
};

std::string hex_bytes(std::string_view s) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    if (!out.empty()) out += ' ';
    out += digits[uint8_t(c) >> 4];
    out += digits[uint8_t(c) & 15];
  }
  return out;
}

void check_version(uint32_t version, const fs::path& path) {
  require(version != 1, path, "header",
          "GGUF version 1 is not supported (its counts are 32-bit): convert the model again with a current llama.cpp");
  if (version == 2 || version == 3) return;
  const uint32_t swapped = __builtin_bswap32(version);
  throw InputError(path, "header",
                   "GGUF version " + std::to_string(version) + " is not supported (2 or 3)" +
                       (swapped == 2 || swapped == 3 ? "; the file looks big-endian, and only little-endian GGUF is read"
                                                     : ""));
}

Header read_header(Reader& r) {
  const std::string where = "header";
  const std::string_view magic = r.bytes(4, where, "magic");
  require(magic == "GGUF", r.path(), where, "not a GGUF file: magic bytes are " + hex_bytes(magic) + ", expected 'GGUF'");
  Header h{};
  h.version = r.scalar<uint32_t>(where, "version");
  check_version(h.version, r.path());
  h.tensor_count = r.scalar<uint64_t>(where, "tensor_count");
  h.kv_count = r.scalar<uint64_t>(where, "kv_count");
  const std::string room = " the " + std::to_string(r.left()) + " bytes left in the file";
  require(h.kv_count <= r.left() / kMinKvBytes, r.path(), where,
          "kv_count " + std::to_string(h.kv_count) + " cannot fit in" + room);
  require(h.tensor_count <= r.left() / kMinTensorInfoBytes, r.path(), where,
          "tensor_count " + std::to_string(h.tensor_count) + " cannot fit in" + room);
  return h;
}

// GGUF's value types, in the file's numbering.
enum class ValueType : uint32_t { U8, I8, U16, I16, U32, I32, F32, Bool, String, Array, U64, I64, F64 };
constexpr uint32_t kValueTypeCount = 13;

// The fewest bytes a value of type t takes: a string its length field, an array its element type
// and count. Bounds array counts by the bytes left.
uint64_t min_value_bytes(ValueType t) {
  switch (t) {
    case ValueType::U8: case ValueType::I8: case ValueType::Bool: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::String: case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    case ValueType::Array: return 12;
  }
  return 1;
}

// Reads the value of one key (`where` names it), charging each array element to a budget shared
// by the whole metadata so that no file makes us build an unbounded JSON tree.
class ValueReader {
 public:
  ValueReader(Reader& r, const std::string& where, uint64_t& budget) : r_(r), where_(where), budget_(budget) {}

  ValueType type() {
    const uint32_t raw = r_.scalar<uint32_t>(where_, "value type");
    require(raw < kValueTypeCount, r_.path(), where_,
            "value type " + std::to_string(raw) + " is not a GGUF type (0 to 12)");
    return ValueType(raw);
  }

  json value(ValueType t, int depth) {
    switch (t) {
      case ValueType::U8: return r_.scalar<uint8_t>(where_, "u8 value");
      case ValueType::I8: return r_.scalar<int8_t>(where_, "i8 value");
      case ValueType::U16: return r_.scalar<uint16_t>(where_, "u16 value");
      case ValueType::I16: return r_.scalar<int16_t>(where_, "i16 value");
      case ValueType::U32: return r_.scalar<uint32_t>(where_, "u32 value");
      case ValueType::I32: return r_.scalar<int32_t>(where_, "i32 value");
      case ValueType::U64: return r_.scalar<uint64_t>(where_, "u64 value");
      case ValueType::I64: return r_.scalar<int64_t>(where_, "i64 value");
      case ValueType::F32: return shortest_double(r_.scalar<float>(where_, "f32 value"));
      case ValueType::F64: return r_.scalar<double>(where_, "f64 value");
      case ValueType::Bool: return boolean();
      case ValueType::String: return valid_utf8(r_.string(where_, "string"));
      case ValueType::Array: return array(depth + 1);
    }
    return nullptr;
  }

 private:
  bool boolean() {
    const uint8_t b = r_.scalar<uint8_t>(where_, "bool value");
    require(b <= 1, r_.path(), where_, "bool value " + std::to_string(b) + " is neither 0 nor 1");
    return b == 1;
  }

  json array(int depth) {
    require(depth <= kMaxArrayDepth, r_.path(), where_,
            "arrays nest more than " + std::to_string(kMaxArrayDepth) + " levels deep");
    const ValueType t = type();
    const uint64_t count = r_.scalar<uint64_t>(where_, "array length");
    require(count <= r_.left() / min_value_bytes(t), r_.path(), where_,
            "an array of " + std::to_string(count) + " elements cannot fit in the " + std::to_string(r_.left()) +
                " bytes left in the file");
    require(count <= budget_, r_.path(), where_,
            "the metadata holds more than " + std::to_string(kMaxMetadataValues) + " values");
    budget_ -= count;
    json out = json::array();
    auto& items = out.get_ref<json::array_t&>();
    items.reserve(size_t(count));
    for (uint64_t i = 0; i < count; ++i) items.push_back(value(t, depth));
    return out;
  }

  Reader& r_;
  const std::string& where_;
  uint64_t& budget_;
};

json read_metadata(Reader& r, uint64_t kv_count) {
  json metadata = json::object();
  uint64_t budget = kMaxMetadataValues;
  for (uint64_t i = 0; i < kv_count; ++i) {
    const std::string numbered = "key/value #" + std::to_string(i);
    const std::string key = valid_utf8(r.string(numbered, "key"));
    require(!key.empty() && key.size() <= kMaxKeyBytes, r.path(), numbered,
            "key length " + std::to_string(key.size()) + " is outside 1 to " + std::to_string(kMaxKeyBytes));
    const std::string where = "key '" + key + "'";
    require(!metadata.contains(key), r.path(), where, "appears twice");
    ValueReader values(r, where, budget);
    metadata[key] = values.value(values.type(), 0);
  }
  return metadata;
}

// general.alignment: a power of two in 32 bits, 32 when absent.
uint64_t alignment_of(const json& metadata, const fs::path& path) {
  auto it = metadata.find("general.alignment");
  if (it == metadata.end()) return kDefaultAlignment;
  const bool ok = it->is_number_unsigned() && it->get<uint64_t>() <= std::numeric_limits<uint32_t>::max() &&
                  std::has_single_bit(it->get<uint64_t>());
  require(ok, path, "key 'general.alignment'",
          "must be a power of two that fits in 32 bits, found " +
              (it->is_number() ? it->dump() : std::string(it->type_name())));
  return it->get<uint64_t>();
}

// ---------------------------------------------------------------------------------------------
// Tensor infos

// ggml's numbers for the types we read.
struct GgmlType {
  uint32_t id;
  DType dtype;
};
constexpr GgmlType kGgmlTypes[] = {{0, DType::F32},  {1, DType::F16},  {2, DType::Q4_0},  {3, DType::Q4_1},
                                   {8, DType::Q8_0}, {12, DType::Q4_K}, {14, DType::Q6_K}, {30, DType::BF16}};

// ggml's names for its type numbers, so that an unsupported type reads as "Q5_K", not "13".
constexpr std::string_view kGgmlNames[] = {
    "F32",     "F16",    "Q4_0",    "Q4_1",  "Q4_2",   "Q4_3",  "Q5_0",   "Q5_1",    "Q8_0",     "Q8_1",
    "Q2_K",    "Q3_K",   "Q4_K",    "Q5_K",  "Q6_K",   "Q8_K",  "IQ2_XXS", "IQ2_XS",  "IQ3_XXS",  "IQ1_S",
    "IQ4_NL",  "IQ3_S",  "IQ2_S",   "IQ4_XS", "I8",    "I16",   "I32",    "I64",     "F64",      "IQ1_M",
    "BF16",    "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4"};

}  // namespace

uint32_t ggml_type_id(DType t) {
  for (const GgmlType& g : kGgmlTypes)
    if (g.dtype == t) return g.id;
  throw std::invalid_argument("GGUF has no type for " + std::string(dtype_name(t)));
}

namespace {

DType dtype_from_ggml(uint32_t type, const fs::path& path, const std::string& where) {
  for (const GgmlType& g : kGgmlTypes)
    if (g.id == type) return g.dtype;
  std::string name = type < std::size(kGgmlNames) ? " (" + std::string(kGgmlNames[type]) + ")" : "";
  throw InputError(path, where,
                   "ggml type " + std::to_string(type) + name +
                       " is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)");
}

// Bytes of the tensor's data: whole blocks per row, products checked for overflow.
uint64_t data_bytes(const GgufTensor& t, const fs::path& path, const std::string& where) {
  auto elements = shape_elements(t.shape);
  require(elements.has_value(), path, where,
          "shape " + shape_string(t.shape) + " has more elements than 64 bits can count");
  const uint32_t block = dtype_info(t.dtype).block_elems;
  require(t.shape.back() % block == 0, path, where,
          "rows of " + std::to_string(t.shape.back()) + " values are not whole " + std::string(dtype_name(t.dtype)) +
              " blocks of " + std::to_string(block));
  auto bytes = dtype_bytes(t.dtype, *elements);
  require(bytes.has_value(), path, where, "shape " + shape_string(t.shape) + " is too large: its byte size overflows");
  return *bytes;
}

// One tensor info; its offset stays relative to the data section until place_tensors().
GgufTensor read_tensor_info(Reader& r, uint64_t index) {
  GgufTensor t;
  const std::string numbered = "tensor #" + std::to_string(index);
  t.name = valid_utf8(r.string(numbered, "name"));
  require(!t.name.empty(), r.path(), numbered, "has an empty name");
  const std::string where = "tensor '" + t.name + "'";
  const uint32_t n_dims = r.scalar<uint32_t>(where, "n_dims");
  require(n_dims >= 1 && n_dims <= kMaxDims, r.path(), where,
          "n_dims " + std::to_string(n_dims) + " is outside 1 to " + std::to_string(kMaxDims));
  t.shape.resize(n_dims);
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t dim = r.scalar<uint64_t>(where, "dimension");
    require(dim > 0 && dim <= uint64_t(std::numeric_limits<int64_t>::max()), r.path(), where,
            "dimension " + std::to_string(d) + " is " + std::to_string(dim) + ", outside 1 to 2^63 - 1");
    t.shape[n_dims - 1 - d] = int64_t(dim);  // GGUF lists the fastest dimension first
  }
  t.dtype = dtype_from_ggml(r.scalar<uint32_t>(where, "type"), r.path(), where);
  t.offset = r.scalar<uint64_t>(where, "offset");
  t.nbytes = data_bytes(t, r.path(), where);
  return t;
}

std::vector<GgufTensor> read_tensor_infos(Reader& r, uint64_t count) {
  std::vector<GgufTensor> tensors;
  tensors.reserve(size_t(count));  // bounded by the file size in read_header()
  std::unordered_set<std::string> names;
  for (uint64_t i = 0; i < count; ++i) {
    tensors.push_back(read_tensor_info(r, i));
    require(names.insert(tensors.back().name).second, r.path(), "tensor '" + tensors.back().name + "'",
            "appears twice");
  }
  return tensors;
}

void check_no_overlap(const std::vector<GgufTensor>& tensors, const fs::path& path) {
  std::vector<const GgufTensor*> by_offset;
  by_offset.reserve(tensors.size());
  for (const GgufTensor& t : tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensor &prev = *by_offset[i - 1], &cur = *by_offset[i];
    require(prev.offset + prev.nbytes <= cur.offset, path, "tensor '" + cur.name + "'",
            "data overlaps that of tensor '" + prev.name + "'");
  }
}

// Turns each relative offset into an absolute one after checking it is aligned and its data lies
// inside the file; then checks that no two tensors share bytes.
void place_tensors(std::vector<GgufTensor>& tensors, uint64_t header_end, uint64_t alignment, uint64_t file_size,
                   const fs::path& path) {
  // header_end <= file_size and alignment < 2^32: the sum cannot overflow.
  const uint64_t data_start = (header_end + alignment - 1) / alignment * alignment;
  for (GgufTensor& t : tensors) {
    const std::string where = "tensor '" + t.name + "'";
    require(t.offset % alignment == 0, path, where,
            "offset " + std::to_string(t.offset) + " is not a multiple of the alignment " + std::to_string(alignment));
    uint64_t begin = 0, end = 0;
    const bool inside = !__builtin_add_overflow(data_start, t.offset, &begin) &&
                        !__builtin_add_overflow(begin, t.nbytes, &end) && end <= file_size;
    require(inside, path, where,
            "data at offset " + std::to_string(t.offset) + " (" + std::to_string(t.nbytes) +
                " bytes, data section at byte " + std::to_string(data_start) + ") lies outside the file (" +
                std::to_string(file_size) + " bytes)");
    t.offset = begin;
  }
  check_no_overlap(tensors, path);
}

}  // namespace

GgufFile GgufFile::open(const fs::path& path) {
  GgufFile f;
  f.file_ = ReadOnlyFile::open(path);
  // The header is parsed from a map of the whole file: only the pages it touches are read.
  const auto bytes = f.file_->map(0, f.file_->size());
  Reader r({bytes.get(), size_t(f.file_->size())}, path);
  const Header h = read_header(r);
  f.version_ = h.version;
  f.metadata_ = read_metadata(r, h.kv_count);
  f.tensors_ = read_tensor_infos(r, h.tensor_count);
  place_tensors(f.tensors_, r.pos(), alignment_of(f.metadata_, path), f.file_->size(), path);
  return f;
}

Tensor GgufFile::load_raw(const GgufTensor& t) const {
  return Tensor::view(t.dtype, t.shape, file_->map(t.offset, t.nbytes));
}

std::string GgufFile::architecture() const {
  auto it = metadata_.find("general.architecture");
  return it != metadata_.end() && it->is_string() ? it->get<std::string>() : "";
}

}  // namespace upcycle

#include "core/gguf_writer.hpp"

#include <bit>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "core/gguf_file.hpp"

namespace upcycle {

static_assert(std::endian::native == std::endian::little, "GGUF fields are written as little-endian bytes");

namespace {

// GGUF's value type numbers.
enum GgufType : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9 };

class Bytes {
 public:
  template <class T>
  void scalar(T v) {
    char b[sizeof v];
    std::memcpy(b, &v, sizeof v);
    out_.append(b, sizeof v);
  }
  void string(const std::string& s) {
    scalar<uint64_t>(s.size());
    out_.append(s);
  }
  std::string& str() { return out_; }

 private:
  std::string out_;
};

template <class T>
constexpr uint32_t type_of() {
  if constexpr (std::is_same_v<T, uint32_t>) return kU32;
  else if constexpr (std::is_same_v<T, int32_t>) return kI32;
  else if constexpr (std::is_same_v<T, float>) return kF32;
  else if constexpr (std::is_same_v<T, bool>) return kBool;
  else return kString;
}

template <class T>
void element(Bytes& b, const T& v) {
  if constexpr (std::is_same_v<T, std::string>) b.string(v);
  else if constexpr (std::is_same_v<T, bool>) b.scalar<uint8_t>(v ? 1 : 0);
  else b.scalar(v);
}

void value(Bytes& b, const GgufValue& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (requires { typename T::value_type; } && !std::is_same_v<T, std::string>) {
          b.scalar<uint32_t>(kArray);
          b.scalar<uint32_t>(type_of<typename T::value_type>());
          b.scalar<uint64_t>(x.size());
          for (const auto& e : x) element(b, e);
        } else {
          b.scalar<uint32_t>(type_of<T>());
          element(b, x);
        }
      },
      v);
}

uint64_t aligned(uint64_t n) { return (n + kGgufAlignment - 1) / kGgufAlignment * kGgufAlignment; }

}  // namespace

GgufLayout gguf_layout(const std::vector<GgufKeyValue>& metadata, const std::vector<GgufTensorInfo>& tensors) {
  Bytes b;
  b.str() = "GGUF";
  b.scalar<uint32_t>(3);
  b.scalar<uint64_t>(tensors.size());
  b.scalar<uint64_t>(metadata.size());
  for (const GgufKeyValue& kv : metadata) {
    b.string(kv.key);
    value(b, kv.value);
  }
  GgufLayout layout;
  for (const GgufTensorInfo& t : tensors) {
    const auto elements = shape_elements(t.shape);
    const auto bytes = elements ? dtype_bytes(t.dtype, *elements) : std::nullopt;
    if (t.shape.empty() || !bytes || t.shape.back() % dtype_info(t.dtype).block_elems != 0)
      throw std::invalid_argument("GGUF tensor '" + t.name + "': " + shape_string(t.shape) + " is not whole rows of " +
                                  std::string(dtype_name(t.dtype)) + " blocks");
    b.string(t.name);
    b.scalar<uint32_t>(uint32_t(t.shape.size()));
    for (auto d = t.shape.rbegin(); d != t.shape.rend(); ++d) b.scalar<uint64_t>(uint64_t(*d));
    b.scalar<uint32_t>(ggml_type_id(t.dtype));
    b.scalar<uint64_t>(layout.data_bytes);
    layout.offsets.push_back(layout.data_bytes);
    layout.sizes.push_back(*bytes);
    layout.data_bytes = aligned(layout.data_bytes + *bytes);
  }
  layout.header = std::move(b.str());
  layout.header.resize(aligned(layout.header.size()), '\0');
  return layout;
}

}  // namespace upcycle

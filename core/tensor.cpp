#include "core/tensor.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <stdexcept>

#include "core/quant.hpp"

namespace upcycle {

std::optional<uint64_t> shape_elements(const Shape& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, uint64_t(d), &n)) return std::nullopt;
  }
  return n;
}

std::string shape_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {
// (elements, bytes) of a shape in a dtype; std::invalid_argument when it cannot be stored.
std::pair<uint64_t, uint64_t> sizes(DType dtype, const Shape& shape) {
  auto n = shape_elements(shape);
  if (!n) throw std::invalid_argument("tensor shape " + shape_string(shape) + " is invalid");
  auto b = dtype_bytes(dtype, *n);
  if (!b) throw std::invalid_argument("tensor shape " + shape_string(shape) + " does not fit dtype " +
                                      std::string(dtype_name(dtype)));
  return {*n, *b};
}

template <class T>
bool matches(DType d) {
  if constexpr (std::is_same_v<T, float>) return d == DType::F32;
  else if constexpr (std::is_same_v<T, double>) return d == DType::F64;
  else if constexpr (std::is_same_v<T, uint16_t>) return d == DType::F16 || d == DType::BF16;
  else return false;
}
}  // namespace

Tensor Tensor::zeros(DType dtype, Shape shape) {
  auto [n, b] = sizes(dtype, shape);
  std::shared_ptr<std::byte[]> buf(new std::byte[b]());
  return Tensor(dtype, std::move(shape), n, b, std::shared_ptr<const std::byte>(buf, buf.get()), Storage::Owned);
}

Tensor Tensor::from_f32(Shape shape, std::vector<float> values) {
  Tensor t = zeros(DType::F32, std::move(shape));
  if (values.size() != t.numel())
    throw std::invalid_argument("from_f32: " + std::to_string(values.size()) + " values for shape " +
                                shape_string(t.shape()));
  if (!values.empty()) std::memcpy(t.mutable_bytes().data(), values.data(), t.nbytes());
  return t;
}

Tensor Tensor::view(DType dtype, Shape shape, std::shared_ptr<const std::byte> data) {
  auto [n, b] = sizes(dtype, shape);
  return Tensor(dtype, std::move(shape), n, b, std::move(data), Storage::FileMap);
}

Tensor Tensor::borrowed(DType dtype, Shape shape, std::shared_ptr<const std::byte> data) {
  auto [n, b] = sizes(dtype, shape);
  return Tensor(dtype, std::move(shape), n, b, std::move(data), Storage::Borrowed);
}

struct Tensor::Computed {
  RangeFill fill;
  std::shared_ptr<const void> group;
  uint64_t segments = 1;
  std::once_flag once;
  std::vector<float> values;
};

Tensor Tensor::computed(Shape shape, RangeFill fill, std::shared_ptr<const void> group, uint64_t segments) {
  auto [n, b] = sizes(DType::F32, shape);
  if (segments == 0 || n % segments)
    throw std::invalid_argument("computed tensor: " + std::to_string(n) + " elements in " + std::to_string(segments) +
                                " equal segments");
  Tensor t(DType::F32, std::move(shape), n, b, nullptr, Storage::Computed);
  t.computed_ = std::make_shared<Computed>();
  t.computed_->fill = std::move(fill);
  t.computed_->group = std::move(group);
  t.computed_->segments = segments;
  return t;
}

const void* Tensor::group() const { return computed_ ? computed_->group.get() : nullptr; }
uint64_t Tensor::segments() const { return computed_ ? computed_->segments : 1; }

const std::byte* Tensor::data() const {
  if (!computed_) return data_.get();
  std::call_once(computed_->once, [&] {
    computed_->values.resize(numel_);
    computed_->fill(0, computed_->values);
  });
  return reinterpret_cast<const std::byte*>(computed_->values.data());
}

Tensor Tensor::with_file_span(FileSpan span) const {
  if (storage_ != Storage::FileMap) throw std::logic_error("with_file_span: only file maps lie in files");
  Tensor t = *this;
  t.file_span_ = std::move(span);
  return t;
}

std::span<std::byte> Tensor::mutable_bytes() {
  if (storage_ != Storage::Owned) throw std::logic_error("tensor is a read-only view");
  return {const_cast<std::byte*>(data_.get()), size_t(nbytes_)};
}

template <class T>
std::span<const T> Tensor::span() const {
  if (!matches<T>(dtype_)) throw std::logic_error("tensor span: element type does not match dtype");
  return {reinterpret_cast<const T*>(data()), size_t(numel_)};
}

template <class T>
std::span<T> Tensor::mutable_span() {
  if (!matches<T>(dtype_)) throw std::logic_error("tensor span: element type does not match dtype");
  return {reinterpret_cast<T*>(mutable_bytes().data()), size_t(numel_)};
}

template std::span<const float> Tensor::span<float>() const;
template std::span<const double> Tensor::span<double>() const;
template std::span<const uint16_t> Tensor::span<uint16_t>() const;
template std::span<float> Tensor::mutable_span<float>();
template std::span<double> Tensor::mutable_span<double>();
template std::span<uint16_t> Tensor::mutable_span<uint16_t>();

Tensor Tensor::to(DType dtype) const {
  if (dtype == dtype_) return *this;
  Tensor out = zeros(dtype, shape_);
  if (is_quantized(dtype_)) {
    if (dtype != DType::F32) throw std::logic_error("quantized tensors convert to f32 only");
    dequantize(dtype_, data(), nbytes_, out.mutable_span<float>().data(), numel_);
  } else {
    convert(dtype_, data(), dtype, out.mutable_bytes().data(), numel_);
  }
  return out;
}

std::vector<float> Tensor::to_f32_vector() const {
  std::vector<float> out;
  to_f32_into(out);
  return out;
}

void Tensor::to_f32_into(std::vector<float>& out) const {
  out.resize(numel_);
  to_f32_range(0, out);
}

void Tensor::to_f32_range(uint64_t first, std::span<float> out) const {
  if (first > numel_ || out.size() > numel_ - first) throw std::out_of_range("to_f32_range: past the tensor's end");
  if (computed_) return computed_->fill(first, out);
  const DTypeInfo& info = dtype_info(dtype_);
  if (first % info.block_elems || (out.size() % info.block_elems && first + out.size() != numel_))
    throw std::invalid_argument("to_f32_range: a range of a " + std::string(dtype_name(dtype_)) +
                                " tensor must cover whole blocks of " + std::to_string(info.block_elems) + " elements");
  const std::byte* src = data_.get() + first / info.block_elems * info.block_bytes;
  if (is_quantized(dtype_)) dequantize(dtype_, src, (out.size() + info.block_elems - 1) / info.block_elems * info.block_bytes, out.data(), out.size());
  else convert(dtype_, src, DType::F32, out.data(), out.size());
}

void Tensor::release(uint64_t first, uint64_t count) const {
  if (storage_ != Storage::FileMap || first >= numel_) return;
  const DTypeInfo& info = dtype_info(dtype_);
  const uint64_t last = std::min(numel_, first + count);
  const uintptr_t p = reinterpret_cast<uintptr_t>(data_.get()), end_of_tensor = p + nbytes_;
  const uintptr_t from = p + first / info.block_elems * info.block_bytes;
  const uintptr_t to = p + (last + info.block_elems - 1) / info.block_elems * info.block_bytes;
  // The chunks that end in (from, to], or all up to the tensor's end when the range reaches it.
  const uintptr_t chunk_from = std::max(p, from / kReleaseBytes * kReleaseBytes);
  const uintptr_t chunk_to = to >= end_of_tensor ? end_of_tensor : to / kReleaseBytes * kReleaseBytes;
  static const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (chunk_from + page - 1) / page * page, end = chunk_to / page * page;  // our pages only
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

Tensor Tensor::part(uint64_t offset, Shape shape) const {
  auto [n, b] = sizes(dtype_, shape);
  if (offset > nbytes_ || b > nbytes_ - offset) throw std::out_of_range("Tensor::part: past the tensor's end");
  // Aliases the whole tensor's keeper (made first for a computed tensor).
  std::shared_ptr<const std::byte> bytes(std::make_shared<Tensor>(*this), data() + offset);
  return Tensor(dtype_, std::move(shape), n, b, std::move(bytes),
                storage_ == Storage::FileMap ? Storage::FileMap : Storage::Borrowed);
}

uint64_t range_block(uint64_t elements, std::span<const Tensor> tensors) {
  uint64_t granule = 1;
  for (const Tensor& t : tensors) granule = std::max<uint64_t>(granule, dtype_info(t.dtype()).block_elems);
  return std::max<uint64_t>(1, (elements + granule - 1) / granule) * granule;
}

Tensor Tensor::reshaped(Shape shape) const {
  auto n = shape_elements(shape);
  if (!n || *n != numel_) throw std::invalid_argument("reshape to " + shape_string(shape) + " changes the size");
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

}  // namespace upcycle

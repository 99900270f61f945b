// A tensor: dtype, shape (row major, slowest dimension first, as safetensors and PyTorch list
// it) and bytes that are either owned or a read-only memory map kept alive by the tensor.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "core/mapped_file.hpp"

namespace upcycle {

using Shape = std::vector<int64_t>;

// Where a view's bytes lie in a file, when they are the file's bytes as they are: writers then
// copy file to file inside the kernel instead of through this process's memory.
struct FileSpan {
  std::shared_ptr<const ReadOnlyFile> file;
  uint64_t offset;
};

// Number of elements; nullopt when a dimension is negative or the product overflows.
std::optional<uint64_t> shape_elements(const Shape& shape);
std::string shape_string(const Shape& shape);  // "[576, 1536]"

class Tensor {
 public:
  Tensor() = default;

  // Owned, zero-filled.
  static Tensor zeros(DType dtype, Shape shape);
  // Owned f32 from values; values.size() must equal the shape's element count.
  static Tensor from_f32(Shape shape, std::vector<float> values);
  // A view of a read-only file map; `data` keeps it alive.
  static Tensor view(DType dtype, Shape shape, std::shared_ptr<const std::byte> data);
  // A view of memory owned elsewhere (a buffer its owner keeps unchanged while the tensor is
  // used); `data` may keep it alive or, with no owner, the caller does.
  static Tensor borrowed(DType dtype, Shape shape, std::shared_ptr<const std::byte> data);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  size_t rank() const { return shape_.size(); }
  uint64_t numel() const { return numel_; }
  uint64_t nbytes() const { return nbytes_; }
  bool empty() const { return !data_ && numel_ == 0; }
  // True for views of file maps: their pages can be dropped from memory and read back, which
  // would zero a borrowed buffer's.
  bool is_file_map() const { return storage_ == Storage::FileMap; }
  // Set by readers on views that map a file's bytes unchanged; kept by reshaped() and to() of
  // the same dtype, dropped by anything that makes new bytes.
  const std::optional<FileSpan>& file_span() const { return file_span_; }
  Tensor with_file_span(FileSpan span) const;

  std::span<const std::byte> bytes() const { return {data_.get(), size_t(nbytes_)}; }
  // Writable bytes: only for tensors created owned (zeros, from_f32, to); throws on a view.
  std::span<std::byte> mutable_bytes();

  // Typed access; throws std::logic_error when T does not match the dtype.
  template <class T>
  std::span<const T> span() const;
  template <class T>
  std::span<T> mutable_span();

  // The same values in another plain float type. Converting to the tensor's own dtype shares
  // the bytes; anything else makes an owned copy. Quantized tensors convert to f32 only.
  Tensor to(DType dtype) const;
  std::vector<float> to_f32_vector() const;
  // The same into `out` (resized; its capacity is reused, so a loop over tensors allocates once).
  void to_f32_into(std::vector<float>& out) const;
  // Elements [first, first + out.size()) as f32, for plain float dtypes (std::logic_error for
  // quantized ones, std::out_of_range past the end): a tensor converted a block at a time.
  void to_f32_range(uint64_t first, std::span<float> out) const;

  // Same bytes, another shape of the same element count.
  Tensor reshaped(Shape shape) const;

 private:
  enum class Storage { Owned, FileMap, Borrowed };
  Tensor(DType dtype, Shape shape, uint64_t numel, uint64_t nbytes, std::shared_ptr<const std::byte> data,
         Storage storage)
      : dtype_(dtype), shape_(std::move(shape)), numel_(numel), nbytes_(nbytes), data_(std::move(data)),
        storage_(storage) {}
  DType dtype_ = DType::F32;
  Shape shape_;
  uint64_t numel_ = 0, nbytes_ = 0;
  std::shared_ptr<const std::byte> data_;
  Storage storage_ = Storage::Borrowed;
  std::optional<FileSpan> file_span_;
};

}  // namespace upcycle

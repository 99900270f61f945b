// A tensor: dtype, shape (row major, slowest dimension first, as safetensors and PyTorch list
// it) and bytes that are either owned, a read-only memory map kept alive by the tensor, or
// computed on demand a range at a time (so a writer streams a computed tensor of any size).
#pragma once
#include <cstdint>
#include <functional>
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
  // f32 values made on demand: fill(first, out) writes elements [first, first + out.size()) for
  // any range. to_f32_range and writers ask for ranges; bytes() and span() make (and keep) the
  // whole tensor once. Tensors of one `group` (made together cheaper than apart, such as the
  // experts of a layer) are best asked for range by range in turn: writers do so when they meet
  // them one after another (SafetensorsWriter::write_group). Likewise the `segments` equal parts
  // of one tensor (a fused tensor's experts): writers ask for a range of each part in turn.
  using RangeFill = std::function<void(uint64_t first, std::span<float> out)>;
  static Tensor computed(Shape shape, RangeFill fill, std::shared_ptr<const void> group = {},
                         uint64_t segments = 1);

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_.at(i); }
  size_t rank() const { return shape_.size(); }
  uint64_t numel() const { return numel_; }
  uint64_t nbytes() const { return nbytes_; }
  bool empty() const { return !data_ && numel_ == 0; }
  bool is_computed() const { return storage_ == Storage::Computed; }
  const void* group() const;  // a computed tensor's group; null for none
  uint64_t segments() const;   // a computed tensor's equal parts; 1 for any other
  // Set by readers on views that map a file's bytes unchanged; kept by reshaped() and to() of
  // the same dtype, dropped by anything that makes new bytes.
  const std::optional<FileSpan>& file_span() const { return file_span_; }
  Tensor with_file_span(FileSpan span) const;

  std::span<const std::byte> bytes() const { return {data(), size_t(nbytes_)}; }
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
  // Elements [first, first + out.size()) as f32 (std::out_of_range past the end): a tensor
  // converted a block at a time. Quantized tensors take ranges of whole quantization blocks
  // (std::invalid_argument otherwise).
  void to_f32_range(uint64_t first, std::span<float> out) const;

  // Drops pages of a file map read up to element first + count from this process's resident
  // memory (they stay in the page cache and are read back if touched again), so a tensor read
  // once, a range at a time, never becomes resident in full. Pages go a chunk of kReleaseBytes
  // at a time, when a range reaching the chunk's end (or the tensor's) is released: each drop
  // costs a TLB shootdown across the process's threads, so a stream of small ranges must not pay
  // one per range. No-op for other storage (dropping a borrowed buffer's pages would zero them).
  static constexpr uint64_t kReleaseBytes = uint64_t(8) << 20;
  void release(uint64_t first, uint64_t count) const;

  // Same bytes, another shape of the same element count.
  Tensor reshaped(Shape shape) const;
  // A view of `shape`'s elements of this tensor's dtype from byte `offset` on (a fused tensor's
  // expert), keeping this tensor's bytes alive: a file map's part is a file map's (release()
  // drops its pages), any other's is borrowed. std::out_of_range when it does not fit.
  Tensor part(uint64_t offset, Shape shape) const;

 private:
  enum class Storage { Owned, FileMap, Borrowed, Computed };
  struct Computed;  // the fill, and the whole tensor once something asked for its bytes
  Tensor(DType dtype, Shape shape, uint64_t numel, uint64_t nbytes, std::shared_ptr<const std::byte> data,
         Storage storage)
      : dtype_(dtype), shape_(std::move(shape)), numel_(numel), nbytes_(nbytes), data_(std::move(data)),
        storage_(storage) {}
  DType dtype_ = DType::F32;
  Shape shape_;
  uint64_t numel_ = 0, nbytes_ = 0;
  std::shared_ptr<const std::byte> data_;
  Storage storage_ = Storage::Borrowed;
  std::shared_ptr<Computed> computed_;
  std::optional<FileSpan> file_span_;
  const std::byte* data() const;  // the bytes, made first for a computed tensor
};

// `elements` rounded up to a multiple of every tensor's quantization block (all powers of two):
// blocks that to_f32_range takes from each of them.
uint64_t range_block(uint64_t elements, std::span<const Tensor> tensors);

}  // namespace upcycle

#include "formats/checkpoint_writer.hpp"

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "core/error.hpp"
#include "core/output_file.hpp"
#include "core/quant.hpp"

namespace upcycle {

DType output_dtype(DType stored, const WriteOptions& opts) {
  if (opts.dtype) return *opts.dtype;
  return is_quantized(stored) ? DType::F32 : stored;
}

uint64_t page_cut(uint64_t at, uint64_t element_bytes, uint64_t granule) {
  // (at + k · granule · element_bytes) mod kPage repeats within kPage steps of k.
  for (uint64_t k = 0; k < OutputFile::kPage; ++k)
    if ((at + k * granule * element_bytes) % OutputFile::kPage == 0) return k * granule;
  return 0;
}

// A computed tensor's pieces: made in f32 a range at a time, then converted.
void write_computed_range(const Tensor& t, DType dtype, uint64_t from, uint64_t count, const ChunkSink& sink,
                          uint64_t at, uint64_t max_bytes) {
  const uint64_t out_bytes = dtype_info(dtype).block_bytes;
  const uint64_t piece = std::max<uint64_t>(1, max_bytes / std::max<uint64_t>(sizeof(float), out_bytes));
  std::vector<float> values;
  std::vector<std::byte> buffer;
  const uint64_t end = from + count;
  for (uint64_t first = from, next = from + page_cut(at, out_bytes) + piece; first < end; first = next, next += piece) {
    values.resize(std::min(next, end) - first);
    t.to_f32_range(first, values);
    if (dtype == DType::F32) {
      sink(std::as_bytes(std::span(values)), first);
    } else {
      buffer.resize(values.size() * out_bytes);
      convert(DType::F32, reinterpret_cast<const std::byte*>(values.data()), dtype, buffer.data(), values.size());
      sink(buffer, first);
    }
  }
}

void write_converted(const Tensor& t, DType dtype, const ChunkSink& sink, uint64_t at, uint64_t max_bytes) {
  if (t.is_computed()) return write_computed_range(t, dtype, 0, t.numel(), sink, at, max_bytes);
  const DTypeInfo& in = dtype_info(t.dtype());
  const uint64_t out_bytes = dtype_info(dtype).block_bytes;  // output types are plain: 1 element a block
  // Whole input blocks per piece, sized by the larger of input and output bytes.
  const uint64_t per_block = std::max<uint64_t>(in.block_bytes, in.block_elems * out_bytes);
  const uint64_t blocks = std::max<uint64_t>(1, max_bytes / per_block);
  const uint64_t total_blocks = t.numel() / in.block_elems;
  std::vector<std::byte> buffer;
  const uint64_t lead = page_cut(at, out_bytes, in.block_elems) / in.block_elems;
  for (uint64_t b = 0, next = lead + blocks; b < total_blocks; b = next, next += blocks) {
    const uint64_t nb = std::min(next, total_blocks) - b, elems = nb * in.block_elems;
    const std::byte* src = t.bytes().data() + b * in.block_bytes;
    if (dtype == t.dtype()) {
      sink({src, nb * in.block_bytes}, b * in.block_elems);
    } else {
      buffer.resize(elems * out_bytes);
      if (is_quantized(t.dtype())) {
        if (dtype != DType::F32) throw std::logic_error("write_converted: quantized sources convert to f32");
        dequantize(t.dtype(), src, nb * in.block_bytes, reinterpret_cast<float*>(buffer.data()), elems);
      } else {
        convert(t.dtype(), src, dtype, buffer.data(), elems);
      }
      sink(buffer, b * in.block_elems);
    }
    t.release(b * in.block_elems, elems);
  }
}

void write_checkpoint(const Checkpoint& in, const std::filesystem::path& out, const WriteOptions& opts) {
  require(opts.dtype != DType::Q8_0 || out.extension() == ".gguf", out, "q8_0 is written to GGUF files only");
  if (out.extension() == ".h5") write_h5(in, out, opts);
  else if (out.extension() == ".gguf") write_gguf(in, out, opts);
  else write_hf_folder(in, out, opts);
}

}  // namespace upcycle

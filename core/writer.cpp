#include "core/writer.hpp"

namespace upcycle {

DType output_dtype(DType stored, const WriteOptions& opts) {
  if (opts.dtype) return *opts.dtype;
  return is_quantized(stored) ? DType::F32 : stored;
}

Tensor to_output(const Tensor& t, const WriteOptions& opts) { return t.to(output_dtype(t.dtype(), opts)); }

void write_checkpoint(const Checkpoint& in, const std::filesystem::path& out, const WriteOptions& opts) {
  if (out.extension() == ".h5") write_h5(in, out, opts);
  else write_hf_folder(in, out, opts);
}

}  // namespace upcycle

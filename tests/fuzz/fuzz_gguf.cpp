// libFuzzer target for the GGUF reader: any input must either open, with every tensor loadable
// as stored and dequantizable to f32, or be refused with upcycle::InputError. Files that open
// are also presented as a checkpoint (config from the metadata, Hugging Face names, q/k rows
// unpermuted), the path `upcycle inspect` and `export` take. Anything else (another exception, a
// crash, a sanitizer report, a leak) is a finding.
#include <cstddef>
#include <cstdint>

#include "core/error.hpp"
#include "formats/gguf_model.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace {

// Reads every value, so a mapping shorter than the tensor shows up here.
void touch(const upcycle::Tensor& f32) {
  volatile float sink = 0;
  for (float v : f32.span<float>()) sink = sink + v;
  (void)sink;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& path = upcycle::fuzz::write_input(data, size, ".gguf");
  try {
    const auto file = upcycle::GgufFile::open(path);
    (void)file.metadata().dump();  // documented as safe to dump (bad UTF-8 replaced)
    (void)file.architecture();
    for (const auto& t : file.tensors()) {
      upcycle::Tensor raw = file.load_raw(t);
      if (raw.numel() > upcycle::fuzz::kMaxElements) continue;
      touch(raw.to(upcycle::DType::F32));
    }
  } catch (const upcycle::InputError&) {
    return 0;
  }
  try {
    const auto ckpt = upcycle::open_gguf(path);
    for (const auto& info : ckpt->tensors()) {
      const auto n = upcycle::shape_elements(info.shape);
      if (!n || *n > upcycle::fuzz::kMaxElements) continue;
      touch(ckpt->load(info.name).to(upcycle::DType::F32));
    }
  } catch (const upcycle::InputError&) {
  }
  return 0;
}

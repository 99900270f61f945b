// libFuzzer target for the safetensors reader: any input must either open, with every tensor
// loadable and convertible to f32, or be refused with upcycle::InputError. Anything else (another
// exception, a crash, a sanitizer report, a leak) is a finding.
#include <cstddef>
#include <cstdint>

#include "core/error.hpp"
#include "formats/safetensors.hpp"
#include "tests/fuzz/fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& path = upcycle::fuzz::write_input(data, size, ".safetensors");
  try {
    const auto file = upcycle::SafetensorsFile::open(path);
    for (const auto& entry : file.entries()) {
      upcycle::Tensor t = file.load(entry);
      if (t.numel() > upcycle::fuzz::kMaxElements) continue;
      upcycle::Tensor f = t.to(upcycle::DType::F32);
      // Touch every value so a map shorter than the tensor shows up here.
      volatile float sink = 0;
      for (float v : f.span<float>()) sink = sink + v;
      (void)sink;
    }
    (void)file.metadata().size();
  } catch (const upcycle::InputError&) {
    // Refused with a message: the expected outcome for most inputs.
  }
  return 0;
}

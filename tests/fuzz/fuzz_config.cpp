// libFuzzer target for config.json: any input must either load as a ModelConfig, whose implied
// tensors (names and shapes) and JSON form can then be computed and read back to the same
// config, or be refused with upcycle::InputError. Anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/expected_tensors.hpp"
#include "tests/fuzz/fuzz_input.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& path = upcycle::fuzz::write_input(data, size, ".json");
  upcycle::ModelConfig config;
  try {
    config = upcycle::ModelConfig::load(path);
  } catch (const upcycle::InputError&) {
    return 0;
  }
  (void)upcycle::expected_tensors(config);
  // What we write for a config we accepted must read back to the same model.
  const auto again = upcycle::ModelConfig::from_json(config.to_json(), "<round trip>");
  if (again.to_json() != config.to_json()) std::abort();
  return 0;
}

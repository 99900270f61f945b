// libFuzzer target for instruction JSONL (Alpaca, chat and pre-tokenized lines): any input must
// either read, every text record then encoding through a ChatML byte tokenizer to ids and labels
// of equal length, or be refused with upcycle::InputError naming a line. With skip_bad every
// line is read or counted as skipped. Anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "core/error.hpp"
#include "data/instruction_data.hpp"
#include "text/byte_tokenizer.hpp"
#include "text/chat_encoder.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace {

const upcycle::ChatEncoder& encoder() {
  static const std::unique_ptr<upcycle::ChatEncoder> e = [] {
    const auto& dir = upcycle::fuzz::input_folder();
    for (const upcycle::GeneratedFile& f : upcycle::byte_tokenizer_files()) {
      const std::string text = *f.contents();
      upcycle::fuzz::write_file(dir / f.name, reinterpret_cast<const uint8_t*>(text.data()), text.size());
    }
    return upcycle::load_chat_encoder(dir, "chatml");
  }();
  return *e;
}

void check(const upcycle::TokenizedData& d) {
  for (const auto& s : d.samples)
    if (s.ids.size() != s.labels.size() || s.line < 1) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& path = upcycle::fuzz::write_input(data, size, ".jsonl");
  auto source = []() -> const upcycle::ChatEncoder& { return encoder(); };
  for (const bool skip_bad : {false, true}) {
    try {
      (void)upcycle::read_instruction_records(path, skip_bad);
      upcycle::TokenizedData d = upcycle::read_instruction_data(path, source, skip_bad);
      check(d);
      upcycle::fit_context(d, 64, skip_bad);
      upcycle::check_vocabulary(d, upcycle::kByteTokenizerVocab);
    } catch (const upcycle::InputError&) {  // with skip_bad: an id outside the vocabulary
    }
  }
  return 0;
}

// libFuzzer target for tokenizer.json (with tokenizer_config.json beside it: the input's bytes
// after its first NUL, when it has one): any input must either load, then encode a fixed set of
// texts (ASCII, multi-byte UTF-8, invalid UTF-8, long runs) to ids in its vocabulary that decode
// without error, or be refused with upcycle::InputError. The text info (chat template, BOS) is
// read the same way. Anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.hpp"
#include "text/model_text.hpp"
#include "text/tokenizer.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace {

const std::string kTexts[] = {
    "Hello world! 123 + 456 = 579.",
    "  leading and trailing spaces  \n\ttabs\r\n",
    "caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80",
    "bad utf-8: \xff\xfe \xc3 \xe6\x97",
    "<|im_start|>user\nhi<|im_end|>",
    std::string(300, 'a') + std::string(100, ' ') + std::string(50, '9'),
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& dir = upcycle::fuzz::input_folder();
  const auto* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  const size_t json_size = nul ? size_t(nul - data) : size;
  upcycle::fuzz::write_file(dir / "tokenizer.json", data, json_size);
  std::error_code ec;
  std::filesystem::remove(dir / "tokenizer_config.json", ec);
  if (nul) upcycle::fuzz::write_file(dir / "tokenizer_config.json", nul + 1, size - json_size - 1);
  try {
    (void)upcycle::read_model_text_info(dir);
  } catch (const upcycle::InputError&) {
  }
  std::unique_ptr<upcycle::Tokenizer> tokenizer;
  try {
    tokenizer = upcycle::load_tokenizer(dir / "tokenizer.json");
  } catch (const upcycle::InputError&) {
    return 0;
  }
  for (const std::string& text : kTexts) {
    try {
      const auto ids = tokenizer->encode(text, /*add_bos=*/false);
      for (const auto id : ids)
        if (id < 0 || size_t(id) >= tokenizer->vocab_size()) std::abort();
      (void)tokenizer->decode(ids);
    } catch (const upcycle::InputError&) {
      // A vocabulary that cannot spell the text (no byte fallback, no unknown token) says so.
    }
  }
  return 0;
}

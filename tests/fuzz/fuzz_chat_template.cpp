// libFuzzer target for the chat-template recogniser: any Jinja text must be recognised as one of
// the built-in templates or not (never a crash), and a recognised one must lay out a fixed set of
// conversations, including ones carrying the input's own text, or refuse one that is not a
// conversation with std::invalid_argument. Anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "text/chat_template.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view jinja(reinterpret_cast<const char*>(data), size);
  const auto tmpl = upcycle::recognise_chat_template(jinja);
  if (!tmpl) return 0;
  const std::string text(jinja.substr(0, 256));
  const upcycle::SpecialTexts specials{"<s>", "</s>"};
  const std::vector<std::vector<upcycle::Message>> conversations = {
      {{"user", "hi", ""}, {"assistant", "hello", ""}},
      {{"system", text, ""}, {"user", text, text}, {"assistant", text, ""}},
      {{"user", text, ""}},
      {{"assistant", "no user turn", ""}},
      {{"user", "a", ""}, {"user", "b", ""}},
  };
  for (const auto& messages : conversations)
    for (const bool generation : {false, true}) {
      try {
        (void)upcycle::render_chat(*tmpl, messages, generation, specials);
      } catch (const std::invalid_argument&) {
      }
    }
  (void)upcycle::end_of_turn(*tmpl, specials);
  return 0;
}

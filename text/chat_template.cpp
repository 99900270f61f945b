#include "text/chat_template.hpp"

#include <stdexcept>

namespace upcycle {

namespace {

constexpr const char* kImStart = "<|im_start|>";
constexpr const char* kImEnd = "<|im_end|>";

// Jinja string literals may spell a newline as the two characters \n.
std::string unescape_newlines(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'n') {
      out += '\n';
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

// The first "<|im_start|>system\n...<|im_end|>" whose text is a literal (not built from the
// messages by the template's code).
std::string chatml_default_system(std::string_view jinja) {
  const std::string open = std::string(kImStart) + "system";
  for (size_t at = jinja.find(open); at != std::string_view::npos; at = jinja.find(open, at + 1)) {
    size_t begin = at + open.size();
    if (jinja.substr(begin, 1) == "\n") begin += 1;
    else if (jinja.substr(begin, 2) == "\\n") begin += 2;
    else continue;
    const size_t end = jinja.find(kImEnd, begin);
    if (end == std::string_view::npos) break;
    const std::string_view text = jinja.substr(begin, end - begin);
    const bool code = text.find_first_of("'\"{}") != std::string_view::npos || text.find("message") != text.npos;
    if (!code && !text.empty()) return unescape_newlines(text);
  }
  return {};
}

// Roles in order: an optional system message first, then user and assistant alternating from user.
void check_conversation(const std::vector<Message>& messages) {
  bool seen_user = false;
  const std::string* previous = nullptr;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant")
      throw std::invalid_argument("message " + std::to_string(i) + " has role '" + role +
                                  "' (system, user or assistant)");
    if (role == "system" && i != 0) throw std::invalid_argument("a system message may only come first");
    if (role == "assistant" && !seen_user)
      throw std::invalid_argument("message " + std::to_string(i) + ": an assistant turn before any user turn");
    if (previous && *previous == role)
      throw std::invalid_argument("messages " + std::to_string(i - 1) + " and " + std::to_string(i) +
                                  " are both '" + role + "' turns");
    seen_user |= role == "user";
    previous = &role;
  }
  if (!seen_user) throw std::invalid_argument("the conversation has no user turn");
}

// A user turn's text: Alpaca's input joins the instruction for templates without an input slot.
std::string user_text(const Message& m) { return m.input.empty() ? m.content : m.content + "\n\n" + m.input; }

std::string strip(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

class Renderer {
 public:
  void prompt(std::string text) { add(std::move(text), false); }
  void reply(std::string text) { add(std::move(text), true); }
  std::vector<Segment> take() { return std::move(segments_); }

 private:
  void add(std::string text, bool trained) {
    if (text.empty()) return;
    if (!segments_.empty() && segments_.back().trained == trained) segments_.back().text += text;
    else segments_.push_back({std::move(text), trained});
  }
  std::vector<Segment> segments_;
};

void render_chatml(Renderer& r, const ChatTemplate& t, const std::vector<Message>& messages, bool generation) {
  if (messages[0].role != "system" && !t.default_system.empty())
    r.prompt(std::string(kImStart) + "system\n" + t.default_system + kImEnd + "\n");
  for (const Message& m : messages) {
    r.prompt(kImStart + m.role + "\n");
    if (m.role == "assistant") {
      r.reply(m.content + kImEnd);
      r.prompt("\n");
    } else {
      r.prompt(user_text(m) + kImEnd + "\n");
    }
  }
  if (generation) r.prompt(std::string(kImStart) + "assistant\n");
}

// Hugging Face's Llama-2 chat template: the system prompt inside the first [INST] block.
void render_llama2(Renderer& r, const std::vector<Message>& messages, const SpecialTexts& s) {
  size_t first = 0;
  std::string system;
  if (messages[0].role == "system") {
    system = "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n";
    first = 1;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const Message& m = messages[i];
    if (m.role == "user") r.prompt(s.bos + "[INST] " + strip((i == first ? system : "") + user_text(m)) + " [/INST]");
    else r.reply(" " + strip(m.content) + " " + s.eos);
  }
}

// Stanford Alpaca's prompt, the first instruction after the preamble and every reply closed by EOS.
void render_alpaca(Renderer& r, const std::vector<Message>& messages, const SpecialTexts& s) {
  size_t first = 0;
  std::string preamble;
  if (messages[0].role == "system") {
    preamble = messages[0].content;
    first = 1;
  } else {
    preamble = messages[first].input.empty()
                   ? "Below is an instruction that describes a task. Write a response that appropriately "
                     "completes the request."
                   : "Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.";
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const Message& m = messages[i];
    if (m.role == "assistant") {
      r.reply(m.content + s.eos);
      continue;
    }
    std::string text = (i == first ? preamble : std::string()) + "\n\n### Instruction:\n" + m.content;
    if (!m.input.empty()) text += "\n\n### Input:\n" + m.input;
    r.prompt(text + "\n\n### Response:\n");
  }
}

}  // namespace

std::optional<ChatFormat> parse_chat_format(std::string_view name) {
  if (name == "chatml") return ChatFormat::ChatML;
  if (name == "llama2") return ChatFormat::Llama2;
  if (name == "alpaca") return ChatFormat::Alpaca;
  return std::nullopt;
}

const char* chat_format_name(ChatFormat format) {
  switch (format) {
    case ChatFormat::ChatML: return "chatml";
    case ChatFormat::Llama2: return "llama2";
    case ChatFormat::Alpaca: return "alpaca";
  }
  return "?";
}

std::optional<ChatTemplate> recognise_chat_template(std::string_view jinja) {
  if (jinja.find(kImStart) != std::string_view::npos) return ChatTemplate{ChatFormat::ChatML, chatml_default_system(jinja)};
  if (jinja.find("[INST]") != std::string_view::npos) return ChatTemplate{ChatFormat::Llama2, {}};
  if (jinja.find("### Instruction") != std::string_view::npos) return ChatTemplate{ChatFormat::Alpaca, {}};
  return std::nullopt;
}

std::vector<Segment> render_chat(const ChatTemplate& tmpl, const std::vector<Message>& messages,
                                 bool add_generation_prompt, const SpecialTexts& specials) {
  check_conversation(messages);
  Renderer r;
  switch (tmpl.format) {
    case ChatFormat::ChatML: render_chatml(r, tmpl, messages, add_generation_prompt); break;
    case ChatFormat::Llama2: render_llama2(r, messages, specials); break;
    case ChatFormat::Alpaca: render_alpaca(r, messages, specials); break;
  }
  return r.take();
}

std::string end_of_turn(const ChatTemplate& tmpl, const SpecialTexts& specials) {
  return tmpl.format == ChatFormat::ChatML ? kImEnd : specials.eos;
}

}  // namespace upcycle

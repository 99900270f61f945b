// The pre-tokenizer regexes of the byte-level BPE families, matched by hand. Each *_next(t, i)
// returns where the regex's match starting at byte i ends: alternatives are tried in the
// regex's order and the first that matches wins, as in the regex engines these mirror.
#include "text/tokenizer_impl.hpp"

namespace upcycle::tok {

namespace {

constexpr uint8_t kEnd = 8;  // the class past the end of the text: matches nothing

struct Char {
  uint32_t cp, len;
  uint8_t cls;
};

class Text {
 public:
  explicit Text(std::string_view s) : s_(s) {}
  size_t size() const { return s_.size(); }
  std::string_view view() const { return s_; }

  Char at(size_t i) const {
    if (i >= s_.size()) return {0, 0, kEnd};
    Utf8Char c = utf8_at(s_, i);
    return {c.cp, c.len, char_class(c.cp)};
  }
  // Where the run of characters of class cls starting at i ends.
  size_t run(size_t i, uint8_t cls) const {
    for (Char c = at(i); c.cls == cls; c = at(i)) i += c.len;
    return i;
  }

 private:
  std::string_view s_;
};

bool is_newline(uint32_t cp) { return cp == '\r' || cp == '\n'; }

// 's|'t|'re|'ve|'m|'ll|'d, optionally case-insensitive: the match's length, 0 for none.
size_t contraction(std::string_view s, size_t i, bool any_case) {
  if (s[i] != '\'') return 0;
  // Case folding brings one non-ASCII letter in: long s (U+017F) folds to s.
  if (any_case && s.substr(i + 1, 2) == "\xC5\xBF") return 3;
  auto at = [&](size_t k) -> char {
    char c = k < s.size() ? s[k] : '\0';
    return any_case && c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
  };
  char a = at(i + 1), b = at(i + 2);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (((a == 'r' || a == 'v') && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// White space at i: \s*[\r\n]+ (when newlines count), else \s+(?!\S), else \s+. The first ends
// after the run's last newline; the second leaves the run's last character to the next word
// when a non-space follows.
size_t whitespace_next(const Text& t, size_t i, bool newlines) {
  size_t end = i, last = i, after_newline = 0;
  for (Char c = t.at(i); c.cls == kSpace; c = t.at(end)) {
    last = end;
    end += c.len;
    if (is_newline(c.cp)) after_newline = end;
  }
  if (newlines && after_newline) return after_newline;
  return end < t.size() && last > i ? last : end;
}

size_t gpt2_next(const Text& t, size_t i) {
  if (size_t n = contraction(t.view(), i, false)) return i + n;
  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': the three classes that are not space.
  Char c = t.at(i);
  size_t start = i;
  if (c.cp == ' ') {
    Char d = t.at(i + 1);
    if (d.cls == kLetter || d.cls == kNumber || d.cls == kOther) start = i + 1, c = d;
  }
  if (c.cls != kSpace) return t.run(start, c.cls);
  return whitespace_next(t, i, false);
}

size_t llama3_next(const Text& t, size_t i, size_t max_digits) {
  if (size_t n = contraction(t.view(), i, true)) return i + n;
  Char c = t.at(i);
  if (c.cls == kLetter) return t.run(i, kLetter);
  Char d = t.at(i + c.len);
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (d.cls == kLetter && c.cls != kNumber && !is_newline(c.cp)) return t.run(i + c.len, kLetter);
  // \p{N}{1,max_digits}
  if (c.cls == kNumber) {
    size_t end = i;
    for (size_t n = 0; n < max_digits && c.cls == kNumber; ++n, c = t.at(end)) end += c.len;
    return end;
  }
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  size_t start = i;
  if (c.cp == ' ' && d.cls == kOther) start = i + 1, c = d;
  if (c.cls == kOther) {
    size_t end = t.run(start, kOther);
    while (end < t.size() && is_newline(uint8_t(t.view()[end]))) ++end;
    return end;
  }
  return whitespace_next(t, i, true);
}

template <class Next>
void split_with(std::string_view text, std::vector<std::string_view>& words, Next next) {
  Text t(text);
  for (size_t i = 0; i < text.size();) {
    size_t end = next(t, i);
    words.push_back(text.substr(i, end - i));
    i = end;
  }
}

void split_gpt2(std::string_view text, std::vector<std::string_view>& words) { split_with(text, words, gpt2_next); }

// Every number character alone; the GPT-2 split on what lies between (each piece on its own, so
// its lookahead ends at the piece's end).
void split_digits_then_gpt2(std::string_view text, std::vector<std::string_view>& words) {
  Text t(text);
  size_t piece = 0;
  for (size_t i = 0; i < text.size();) {
    Char c = t.at(i);
    if (c.cls == kNumber) {
      split_gpt2(text.substr(piece, i - piece), words);
      words.push_back(text.substr(i, c.len));
      piece = i + c.len;
    }
    i += c.len;
  }
  split_gpt2(text.substr(piece), words);
}

}  // namespace

const char* split_name(Split split) {
  switch (split) {
    case Split::Gpt2:
      return "gpt2";
    case Split::DigitsThenGpt2:
      return "digits+gpt2";
    case Split::Llama3:
      return "llama3";
    case Split::Qwen2:
      return "qwen2";
  }
  return "?";
}

void pre_split(Split split, std::string_view text, std::vector<std::string_view>& words) {
  switch (split) {
    case Split::Gpt2:
      return split_gpt2(text, words);
    case Split::DigitsThenGpt2:
      return split_digits_then_gpt2(text, words);
    case Split::Llama3:
      return split_with(text, words, [](const Text& t, size_t i) { return llama3_next(t, i, 3); });
    case Split::Qwen2:
      return split_with(text, words, [](const Text& t, size_t i) { return llama3_next(t, i, 1); });
  }
}

}  // namespace upcycle::tok

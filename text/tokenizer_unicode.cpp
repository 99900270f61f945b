// Character classes, UTF-8 decoding and the byte-level alphabet.
#include <algorithm>
#include <memory>

#include "text/tokenizer_impl.hpp"

namespace upcycle::tok {

namespace {

uint8_t class_by_search(uint32_t cp) {
  const CharRange* end = kCharRanges + kCharRangeCount;
  const CharRange* next =
      std::upper_bound(kCharRanges, end, cp, [](uint32_t c, const CharRange& r) { return c < r.first; });
  return (next - 1)->cls;
}

// The Basic Multilingual Plane, where nearly all text lives, as a flat table: one load per
// character instead of a binary search.
const std::array<uint8_t, 0x10000>& bmp_classes() {
  static const auto table = [] {
    auto t = std::make_unique<std::array<uint8_t, 0x10000>>();
    for (uint32_t cp = 0; cp < 0x10000; ++cp) (*t)[cp] = class_by_search(cp);
    return t;
  }();
  return *table;
}

}  // namespace

uint8_t char_class(uint32_t cp) { return cp < 0x10000 ? bmp_classes()[cp] : class_by_search(cp); }

Utf8Char utf8_at(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return uint32_t(uint8_t(s[k])); };
  uint32_t b0 = byte(i);
  if (b0 < 0x80) return {b0, 1};
  const Utf8Char invalid{0xFFFD, 1};
  uint32_t len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 0;
  if (len == 0 || i + len > s.size()) return invalid;
  uint32_t cp = b0 & (0x7F >> len);
  for (uint32_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return invalid;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};  // shortest form only
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return invalid;
  return {cp, len};
}

std::array<std::string, 256> byte_level_alphabet() {
  // Printable Latin-1 bytes stand for themselves; the rest (controls, space, DEL, NBSP, soft
  // hyphen) map in order to U+0100 onwards, so no byte becomes white space or a control.
  std::array<std::string, 256> out;
  uint32_t next = 0x100;
  for (uint32_t b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    uint32_t cp = printable ? b : next++;
    out[b] = cp < 0x80 ? std::string(1, char(cp)) : std::string{char(0xC0 | (cp >> 6)), char(0x80 | (cp & 0x3F))};
  }
  return out;
}

}  // namespace upcycle::tok

// Unicode Normalization Form C (UAX #15): canonical decomposition, canonical ordering of
// combining marks, canonical composition; Hangul syllables by arithmetic rather than tables.
#include <algorithm>
#include <unordered_map>

#include "text/tokenizer_impl.hpp"

namespace upcycle::tok {

namespace {

constexpr uint32_t kOpaque = 0x110000;  // kOpaque + b: a byte that starts no valid UTF-8 sequence

// Hangul: syllable = kSBase + (L * kVCount + V) * kTCount + T.
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

uint8_t combining_class(uint32_t cp) {
  const CharRange* end = kCombiningClasses + kCombiningClassCount;
  auto next = std::upper_bound(kCombiningClasses, end, cp, [](uint32_t c, const CharRange& r) { return c < r.first; });
  return (next - 1)->cls;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + s % kNCount / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  const Decomposition* end = kDecompositions + kDecompositionCount;
  auto d = std::lower_bound(kDecompositions, end, cp, [](const Decomposition& x, uint32_t c) { return x.cp < c; });
  if (d == end || d->cp != cp) return out.push_back(cp);
  decompose(d->first, out);
  if (d->second) decompose(d->second, out);
}

// The primary composite of a and b, or 0.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
    return a + (b - kTBase);
  static const auto pairs = [] {
    std::unordered_map<uint64_t, uint32_t> m;
    for (size_t i = 0; i < kDecompositionCount; ++i)
      if (const Decomposition& d = kDecompositions[i]; d.composes) m.emplace(uint64_t(d.first) << 32 | d.second, d.cp);
    return m;
  }();
  auto it = pairs.find(uint64_t(a) << 32 | b);
  return it == pairs.end() ? 0 : it->second;
}

// Each run of combining marks sorted by class, keeping the order of equal classes.
void reorder(std::vector<uint32_t>& cps) {
  auto by_class = [](uint32_t a, uint32_t b) { return combining_class(a) < combining_class(b); };
  for (size_t i = 0; i < cps.size();) {
    size_t end = i;
    while (end < cps.size() && combining_class(cps[end]) != 0) ++end;
    std::stable_sort(cps.begin() + ptrdiff_t(i), cps.begin() + ptrdiff_t(end), by_class);
    i = std::max(end, i + 1);
  }
}

// Each character joins the last starter, unless a character between them blocks it (a starter,
// or a mark of the same or a higher class).
void compose_all(std::vector<uint32_t>& cps) {
  size_t kept = 0, starter = SIZE_MAX;
  int last = -1;  // class of the last character kept after the starter; -1 when there is none
  for (uint32_t cp : cps) {
    int cls = combining_class(cp);
    bool blocked = last != -1 && last >= cls;
    if (starter != SIZE_MAX && !blocked) {
      if (uint32_t composite = compose(cps[starter], cp)) {
        cps[starter] = composite;
        continue;
      }
    }
    if (cls == 0)
      starter = kept, last = -1;
    else
      last = cls;
    cps[kept++] = cp;
  }
  cps.resize(kept);
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp >= kOpaque)
    out += char(cp - kOpaque);
  else if (cp < 0x80)
    out += char(cp);
  else if (cp < 0x800)
    out += {char(0xC0 | cp >> 6), char(0x80 | (cp & 0x3F))};
  else if (cp < 0x10000)
    out += {char(0xE0 | cp >> 12), char(0x80 | (cp >> 6 & 0x3F)), char(0x80 | (cp & 0x3F))};
  else
    out += {char(0xF0 | cp >> 18), char(0x80 | (cp >> 12 & 0x3F)), char(0x80 | (cp >> 6 & 0x3F)),
            char(0x80 | (cp & 0x3F))};
}

// Text below the first code point NFC touches is NFC already: most text, at the cost of a scan.
bool below_nfc_changes(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    Utf8Char c = utf8_at(text, i);
    if (c.cp >= kNfcStableBelow) return false;
    i += c.len;
  }
  return true;
}

}  // namespace

std::string nfc(std::string_view text) {
  if (below_nfc_changes(text)) return std::string(text);
  std::vector<uint32_t> cps;
  cps.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    Utf8Char c = utf8_at(text, i);
    bool opaque = c.cp == 0xFFFD && c.len == 1;  // a byte that starts no valid sequence
    if (opaque)
      cps.push_back(kOpaque + uint8_t(text[i]));
    else
      decompose(c.cp, cps);
    i += c.len;
  }
  reorder(cps);
  compose_all(cps);
  std::string out;
  out.reserve(text.size());
  for (uint32_t cp : cps) append_utf8(cp, out);
  return out;
}

}  // namespace upcycle::tok

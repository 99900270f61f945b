// Byte-level BPE (GPT-2's scheme, also SmolLM2's, Llama-3's and Qwen2's): raw text is cut into
// pre-tokens; each pre-token's bytes start as one token each (the byte-level alphabet) and the
// adjacent pair of lowest merge rank merges, leftmost first, until no pair has a rank.
#include <algorithm>
#include <functional>
#include <unordered_map>

#include "core/error.hpp"
#include "text/tokenizer_impl.hpp"

namespace upcycle::tok {

namespace {

struct Merge {
  uint32_t rank;
  TokenId merged;
};

// A byte without a token and no <unk> to stand for it is left out, as Hugging Face and llama.cpp do.
constexpr TokenId kDropped = -1;

uint64_t pair_key(TokenId a, TokenId b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }

// A word longer than this is merged piece by piece, each piece cut before a UTF-8 character
// start: the candidate heap grows with the word (about 32 bytes per byte, n log n time), so one
// enormous word (a 50 MB blob with no space) would cost gigabytes. Words of natural text are far
// shorter; in such a blob the tokens may differ from Hugging Face's at the cuts.
constexpr size_t kMaxWordBytes = size_t(1) << 16;
// Words longer than this are not cached: they rarely repeat, and each would be copied.
constexpr size_t kMaxCachedWordBytes = 256;

// The next piece of at most kMaxWordBytes that a word is merged in, taken off the front of `rest`.
std::string_view take_piece(std::string_view& rest) {
  size_t cut = std::min(rest.size(), kMaxWordBytes);
  if (cut < rest.size()) {
    while (cut > 0 && (uint8_t(rest[cut]) & 0xC0) == 0x80) --cut;  // not inside a character
    if (cut == 0) cut = kMaxWordBytes;                             // no character start: bytes
  }
  const std::string_view piece = rest.substr(0, cut);
  rest.remove_prefix(cut);
  return piece;
}

// One word's symbols (a linked list in place) and its candidate merges (a min-heap), kept
// between words so their buffers are reused.
struct Work {
  struct Symbol {
    TokenId id;
    int32_t prev, next;
  };
  struct Candidate {
    uint32_t rank;
    int32_t left;
    TokenId left_id, right_id, merged;
    // The heap's order: lowest rank first, then leftmost.
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

std::string describe(BpeOptions o) {
  return std::string("byte-level BPE (") + split_name(o.split) + " pre-tokenizer" + (o.nfc ? ", NFC" : "") +
         (o.add_prefix_space ? ", prefix space" : "") + ")";
}

class BpeTokenizer final : public Tokenizer {
 public:
  BpeTokenizer(Vocab vocab, const Merges& merges, BpeOptions options);
  std::vector<TokenId> encode(std::string_view text, bool add_bos) const override;
  std::string decode(std::span<const TokenId> ids) const override;

 private:
  void encode_raw(std::string_view text, std::vector<TokenId>& out, WordCache& cache, Work& work) const;
  void merge_word(std::string_view word, std::vector<TokenId>& out, Work& work) const;
  void add_candidate(Work& work, int32_t left) const;

  BpeOptions options_;
  AddedMatcher added_;
  std::array<TokenId, 256> byte_token_{};
  std::unordered_map<uint64_t, Merge> merges_;
  std::vector<std::string> bytes_;                  // what each id decodes to
  std::unordered_map<std::string, TokenId> whole_;  // bytes to id, for ignore_merges
};

// The byte each character of the byte-level alphabet stands for, by code point (all lie below
// U+0144); -1 elsewhere.
using ByteOf = std::array<int16_t, 0x144>;

ByteOf byte_of_alphabet(const std::array<std::string, 256>& alphabet) {
  ByteOf byte_of;
  byte_of.fill(-1);
  for (size_t b = 0; b < 256; ++b) byte_of[utf8_at(alphabet[b], 0).cp] = int16_t(b);
  return byte_of;
}

// The bytes a byte-level spelling stands for; characters outside the alphabet stay as they are.
std::string from_byte_level(std::string_view s, const ByteOf& byte_of) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    Utf8Char c = utf8_at(s, i);
    if (c.cp < byte_of.size() && byte_of[c.cp] >= 0)
      out.push_back(char(byte_of[c.cp]));
    else
      out.append(s.substr(i, c.len));
    i += c.len;
  }
  return out;
}

BpeTokenizer::BpeTokenizer(Vocab vocab, const Merges& merges, BpeOptions options)
    : Tokenizer(vocab.path, std::move(vocab.tokens), vocab.bos, vocab.eos, describe(options)),
      options_(options),
      added_(std::move(vocab.added)) {
  const auto alphabet = byte_level_alphabet();
  const ByteOf byte_of = byte_of_alphabet(alphabet);

  std::unordered_map<std::string_view, TokenId> by_text;  // byte-level spellings of normal tokens
  by_text.reserve(vocab_size());
  bytes_.resize(vocab_size());
  for (size_t id = 0; id < vocab_size(); ++id) {
    bool normal = vocab.types[id] == TokenType::Normal;
    bytes_[id] = normal ? from_byte_level(token(TokenId(id)), byte_of) : token(TokenId(id));
    if (normal) by_text.emplace(token(TokenId(id)), TokenId(id));
  }
  // Vocabularies may lack bytes no text of theirs held (SmolLM2 has no 0x04, 0xF5 and others).
  for (size_t b = 0; b < 256; ++b) {
    auto it = by_text.find(alphabet[b]);
    byte_token_[b] = it != by_text.end() ? it->second : vocab.unk.value_or(kDropped);
  }
  auto id_of = [&](const std::string& text, size_t rank) {
    auto it = by_text.find(text);
    if (it == by_text.end())
      throw InputError(path(), "merge " + std::to_string(rank), "'" + text + "' is not in the vocabulary");
    return it->second;
  };
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    merges_.emplace(pair_key(id_of(a, rank), id_of(b, rank)), Merge{uint32_t(rank), id_of(a + b, rank)});
  }
  if (options_.ignore_merges)
    for (const auto& [text, id] : by_text) whole_.emplace(bytes_[id], id);
}

void BpeTokenizer::add_candidate(Work& work, int32_t left) const {
  if (left < 0) return;
  int32_t right = work.symbols[left].next;
  if (right < 0) return;
  TokenId a = work.symbols[left].id, b = work.symbols[right].id;
  auto it = merges_.find(pair_key(a, b));
  if (it == merges_.end()) return;
  work.heap.push_back({it->second.rank, left, a, b, it->second.merged});
  std::push_heap(work.heap.begin(), work.heap.end(), std::greater<>{});
}

void BpeTokenizer::merge_word(std::string_view word, std::vector<TokenId>& out, Work& work) const {
  auto& sym = work.symbols;
  sym.clear();
  work.heap.clear();
  for (size_t i = 0; i < word.size(); ++i)
    sym.push_back({byte_token_[uint8_t(word[i])], int32_t(i) - 1, i + 1 < word.size() ? int32_t(i + 1) : -1});
  for (int32_t i = 0; i + 1 < int32_t(sym.size()); ++i) add_candidate(work, i);
  while (!work.heap.empty()) {
    std::pop_heap(work.heap.begin(), work.heap.end(), std::greater<>{});
    Work::Candidate c = work.heap.back();
    work.heap.pop_back();
    // A candidate is stale once either side has merged since: a merged symbol has a new id.
    int32_t right = sym[c.left].next;
    if (sym[c.left].id != c.left_id || right < 0 || sym[right].id != c.right_id) continue;
    sym[c.left].id = c.merged;
    sym[c.left].next = sym[right].next;
    if (sym[right].next >= 0) sym[sym[right].next].prev = c.left;
    sym[right].id = -1;
    add_candidate(work, sym[c.left].prev);
    add_candidate(work, c.left);
  }
  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next)
    if (sym[i].id != kDropped) out.push_back(sym[i].id);
}

void BpeTokenizer::encode_raw(std::string_view text, std::vector<TokenId>& out, WordCache& cache, Work& work) const {
  std::string normalized, prefixed;
  if (options_.nfc) text = normalized = nfc(text);
  if (options_.add_prefix_space && !text.starts_with(' ')) text = prefixed.append(" ").append(text);
  std::vector<std::string_view> words;
  pre_split(options_.split, text, words);
  for (std::string_view word : words) {
    if (word.size() == 1) {
      if (TokenId id = byte_token_[uint8_t(word[0])]; id != kDropped) out.push_back(id);
      continue;
    }
    if (auto cached = cache.find(word); !cached.empty()) {
      out.insert(out.end(), cached.begin(), cached.end());
      continue;
    }
    size_t first = out.size();
    auto whole = options_.ignore_merges ? whole_.find(std::string(word)) : whole_.end();
    if (whole != whole_.end())
      out.push_back(whole->second);
    else
      for (std::string_view rest = word; !rest.empty();) merge_word(take_piece(rest), out, work);
    if (word.size() <= kMaxCachedWordBytes) cache.add(word, std::span(out).subspan(first));
  }
}

std::vector<TokenId> BpeTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<TokenId> out;
  out.reserve(text.size() / 3 + 1);
  if (add_bos) out.push_back(required_bos());
  WordCache cache;
  Work work;
  for (const Fragment& f : added_.partition(text)) {
    if (f.token >= 0)
      out.push_back(f.token);
    else
      encode_raw(f.text, out, cache, work);
  }
  return out;
}

std::string BpeTokenizer::decode(std::span<const TokenId> ids) const {
  check_ids(ids);
  std::string out;
  for (TokenId id : ids) out += bytes_[size_t(id)];
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> make_bpe(Vocab vocab, const Merges& merges, BpeOptions options) {
  return std::make_unique<BpeTokenizer>(std::move(vocab), merges, options);
}

}  // namespace upcycle::tok

// SentencePiece's BPE as Llama-2 and Mistral use it, on a GGUF vocabulary: spaces become "▁" and
// one goes in front of raw text; characters start as symbols and the adjacent pair whose join is
// the token of highest score merges, leftmost first, until no join is a token. A character that
// is no token falls back to the <0xXX> tokens of its bytes (or to <unk> without them).
// Where no token has "▁" after another character (Llama-2's vocabulary), no merge can cross the
// place before a word's "▁": the text is cut there and each word merged once per call.
#include <algorithm>
#include <unordered_map>

#include "core/error.hpp"
#include "text/tokenizer_impl.hpp"

namespace upcycle::tok {

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // "▁", U+2581

struct Symbol {
  uint32_t start, len;  // bytes of the escaped text
  int32_t prev, next;
};

struct Candidate {
  float score;
  int32_t left, right;
  uint32_t left_len, right_len;  // when queued: a side that has merged since differs
  // The heap's order: highest score first, then leftmost.
  bool operator<(const Candidate& o) const { return score != o.score ? score < o.score : left > o.left; }
};

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s.substr(i).starts_with(from))
      out += to, i += from.size();
    else
      out += s[i++];
  }
  return out;
}

// "<0x0A>" -> 0x0A; -1 when text is not of that form.
int byte_of_token(std::string_view text) {
  auto hex = [](char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1; };
  if (text.size() != 6 || !text.starts_with("<0x") || text[5] != '>' || hex(text[3]) < 0 || hex(text[4]) < 0) return -1;
  return hex(text[3]) * 16 + hex(text[4]);
}

class SpmTokenizer final : public Tokenizer {
 public:
  SpmTokenizer(Vocab vocab, std::vector<float> scores, bool add_space_prefix);
  std::vector<TokenId> encode(std::string_view text, bool add_bos) const override;
  std::string decode(std::span<const TokenId> ids) const override;

 private:
  void encode_raw(std::string_view text, std::vector<TokenId>& out, WordCache& cache) const;
  void encode_word(std::string_view word, std::vector<TokenId>& out, WordCache& cache) const;
  void merge(std::string_view s, std::vector<TokenId>& out) const;
  void add_candidate(std::string_view s, const std::vector<Symbol>& sym, int32_t left,
                     std::vector<Candidate>& heap) const;
  void emit(std::string_view piece, std::vector<TokenId>& out) const;

  AddedMatcher added_;
  std::vector<float> scores_;
  bool add_space_prefix_;
  std::optional<TokenId> unk_;
  std::unordered_map<std::string_view, TokenId> normal_;  // token text to id, what merges may form
  std::array<std::optional<TokenId>, 256> byte_token_;
  bool byte_fallback_ = false;      // every byte has its token
  bool cut_at_words_ = true;        // no token has "▁" after another character
  std::vector<std::string> bytes_;  // what each id decodes to
};

SpmTokenizer::SpmTokenizer(Vocab vocab, std::vector<float> scores, bool add_space_prefix)
    : Tokenizer(vocab.path, std::move(vocab.tokens), vocab.bos, vocab.eos, "SentencePiece BPE (by score)"),
      added_(std::move(vocab.added)),
      scores_(std::move(scores)),
      add_space_prefix_(add_space_prefix),
      unk_(vocab.unk) {
  bytes_.resize(vocab_size());
  for (size_t i = 0; i < vocab_size(); ++i) {
    const std::string& text = token(TokenId(i));
    switch (vocab.types[i]) {
      case TokenType::Normal:
        normal_.emplace(text, TokenId(i));
        if (cut_at_words_) {
          size_t k = 0;
          while (text.compare(k, kSpace.size(), kSpace) == 0) k += kSpace.size();
          cut_at_words_ = text.find(kSpace, k) == std::string::npos;
        }
        [[fallthrough]];
      case TokenType::UserDefined:
        bytes_[i] = replace_all(text, kSpace, " ");
        break;
      case TokenType::Byte: {
        int b = byte_of_token(text);
        require(b >= 0, path(), "token " + std::to_string(i), "a byte token must read <0xXX>, not '" + text + "'");
        byte_token_[size_t(b)] = TokenId(i);
        bytes_[i] = std::string(1, char(b));
        break;
      }
      default:
        bytes_[i] = text;
    }
  }
  byte_fallback_ = std::all_of(byte_token_.begin(), byte_token_.end(), [](auto t) { return t.has_value(); });
  require(byte_fallback_ || unk_.has_value(), path(),
          "the vocabulary has neither <0xXX> tokens for every byte nor <unk>");
}

void SpmTokenizer::add_candidate(std::string_view s, const std::vector<Symbol>& sym, int32_t left,
                                 std::vector<Candidate>& heap) const {
  if (left < 0 || sym[left].next < 0) return;
  int32_t right = sym[left].next;
  auto it = normal_.find(s.substr(sym[left].start, sym[left].len + sym[right].len));
  if (it == normal_.end()) return;
  heap.push_back({scores_[size_t(it->second)], left, right, sym[left].len, sym[right].len});
  std::push_heap(heap.begin(), heap.end());
}

void SpmTokenizer::emit(std::string_view piece, std::vector<TokenId>& out) const {
  if (auto it = normal_.find(piece); it != normal_.end())
    out.push_back(it->second);
  else if (!byte_fallback_)
    out.push_back(*unk_);
  else
    for (char c : piece) out.push_back(*byte_token_[uint8_t(c)]);
}

void SpmTokenizer::merge(std::string_view s, std::vector<TokenId>& out) const {
  std::vector<Symbol> sym;
  for (uint32_t i = 0; i < s.size();) {
    uint32_t len = utf8_at(s, i).len;
    sym.push_back({i, len, int32_t(sym.size()) - 1, i + len < s.size() ? int32_t(sym.size()) + 1 : -1});
    i += len;
  }
  std::vector<Candidate> heap;
  for (int32_t i = 0; i + 1 < int32_t(sym.size()); ++i) add_candidate(s, sym, i, heap);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    Candidate c = heap.back();
    heap.pop_back();
    Symbol &l = sym[c.left], &r = sym[c.right];
    if (l.len != c.left_len || l.next != c.right || r.len != c.right_len) continue;  // stale
    l.len += r.len;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.left;
    r.len = 0;
    add_candidate(s, sym, l.prev, heap);
    add_candidate(s, sym, c.left, heap);
  }
  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[i].next)
    emit(s.substr(sym[i].start, sym[i].len), out);
}

void SpmTokenizer::encode_word(std::string_view word, std::vector<TokenId>& out, WordCache& cache) const {
  if (auto cached = cache.find(word); !cached.empty()) {
    out.insert(out.end(), cached.begin(), cached.end());
    return;
  }
  size_t first = out.size();
  merge(word, out);
  cache.add(word, std::span(out).subspan(first));
}

void SpmTokenizer::encode_raw(std::string_view text, std::vector<TokenId>& out, WordCache& cache) const {
  std::string s = (add_space_prefix_ ? std::string(kSpace) : std::string()) + replace_all(text, " ", kSpace);
  if (!cut_at_words_) return merge(s, out);
  std::string_view all(s);
  size_t start = 0;  // cut before each "▁" that follows another character; a run of "▁" stays whole
  for (size_t p = all.find(kSpace, 1); p != std::string_view::npos; p = all.find(kSpace, p + kSpace.size())) {
    if (p >= kSpace.size() && all.substr(p - kSpace.size(), kSpace.size()) == kSpace) continue;
    encode_word(all.substr(start, p - start), out, cache);
    start = p;
  }
  encode_word(all.substr(start), out, cache);
}

std::vector<TokenId> SpmTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<TokenId> out;
  if (add_bos) out.push_back(required_bos());
  WordCache cache;
  for (const Fragment& f : added_.partition(text)) {
    if (f.token >= 0)
      out.push_back(f.token);
    else
      encode_raw(f.text, out, cache);
  }
  return out;
}

std::string SpmTokenizer::decode(std::span<const TokenId> ids) const {
  check_ids(ids);
  std::string out;
  for (TokenId id : ids) out += bytes_[size_t(id)];
  // The space encode put in front of the text; SentencePiece's decoder drops it the same way.
  if (add_space_prefix_ && !ids.empty() && bytes_[size_t(ids[0])].starts_with(' ')) out.erase(0, 1);
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> make_spm(Vocab vocab, std::vector<float> scores, bool add_space_prefix) {
  return std::make_unique<SpmTokenizer>(std::move(vocab), std::move(scores), add_space_prefix);
}

}  // namespace upcycle::tok

// What core/tokenizer*.cpp share: a vocabulary as the loaders read it, character classes, the
// pre-tokenizer splits, added-token matching and the constructors of the concrete tokenizers.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "text/tokenizer.hpp"

namespace upcycle::tok {

// GGUF's token types (tokenizer.ggml.token_type). tokenizer.json's added tokens become Control
// (special) or UserDefined; ids no token uses become Unused with empty text.
enum class TokenType : uint8_t { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

// A token matched whole in the text before any splitting. lstrip/rstrip (tokenizer.json) make
// the match take the white space on that side too.
struct AddedToken {
  std::string text;
  TokenId id;
  bool lstrip = false, rstrip = false;
};

struct Vocab {
  std::filesystem::path path;
  std::vector<std::string> tokens;  // by id
  std::vector<TokenType> types;     // by id
  std::vector<AddedToken> added;
  std::optional<TokenId> bos, eos, unk;
};

// Character classes of the pre-tokenizer regexes: \p{L}, \p{N}, \s (White_Space); 0 is anything
// else (the regexes' [^\s\p{L}\p{N}]).
enum CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 4 };
struct CharRange {
  uint32_t first;
  uint8_t cls;
};
extern const CharRange kCharRanges[];  // generated: text/tokenizer_unicode_tables.cpp
extern const size_t kCharRangeCount;
uint8_t char_class(uint32_t cp);

// What NFC needs (generated too): combining classes as ranges (cls is the class), canonical
// decompositions sorted by code point, and the first code point NFC may change or combine.
struct Decomposition {
  uint32_t cp, first, second;  // second 0: a singleton
  bool composes;               // NFC composes first + second back into cp
};
extern const CharRange kCombiningClasses[];
extern const size_t kCombiningClassCount;
extern const Decomposition kDecompositions[];
extern const size_t kDecompositionCount;
extern const uint32_t kNfcStableBelow;
// Unicode Normalization Form C (Qwen2's tokenizer.json asks for it). Bytes that are not UTF-8 pass
// through unchanged.
std::string nfc(std::string_view text);

// One character of UTF-8 text. A byte that does not start a valid sequence is a character of its
// own (cp U+FFFD, class kOther), so any byte string splits and round-trips.
struct Utf8Char {
  uint32_t cp;
  uint32_t len;
};
Utf8Char utf8_at(std::string_view s, size_t i);

// The byte-level alphabet (GPT-2's bytes_to_unicode): each byte as one printable character.
std::array<std::string, 256> byte_level_alphabet();

// The pre-tokenizer regex families, each split by hand.
enum class Split {
  Gpt2,            // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  DigitsThenGpt2,  // each \p{N} alone, then Gpt2 between them (SmolLM, StarCoder)
  Llama3,          // case-insensitive contractions, [^\r\n\p{L}\p{N}]?\p{L}+, \p{N}{1,3}, ...
  Qwen2,           // Llama3 with single digits
};
const char* split_name(Split split);
// Appends the pre-tokens of text, in order; together they are exactly text.
void pre_split(Split split, std::string_view text, std::vector<std::string_view>& words);

// Cuts text into raw pieces and added tokens (leftmost, then longest match).
struct Fragment {
  std::string_view text;  // raw text, when token < 0
  TokenId token = -1;
};
class AddedMatcher {
 public:
  explicit AddedMatcher(std::vector<AddedToken> tokens);
  std::vector<Fragment> partition(std::string_view text) const;

 private:
  size_t match_at(std::string_view text, size_t pos) const;  // index into tokens_, or npos
  std::vector<AddedToken> tokens_;                           // longest first
  std::array<std::vector<uint32_t>, 256> by_first_byte_;     // indices into tokens_
};

// Words already encoded in one encode() call: text repeats its words, and most of the time goes
// to merging.
class WordCache {
 public:
  // The cached ids of word, or an empty span.
  std::span<const TokenId> find(std::string_view word) const {
    auto it = index_.find(word);
    if (it == index_.end()) return {};
    return std::span(ids_).subspan(it->second.first, it->second.second);
  }
  void add(std::string_view word, std::span<const TokenId> ids) {
    if (index_.size() >= kMaxWords) return;  // bounds memory on huge inputs of unique words
    index_.emplace(std::string(word), std::pair{uint32_t(ids_.size()), uint32_t(ids.size())});
    ids_.insert(ids_.end(), ids.begin(), ids.end());
  }

 private:
  static constexpr size_t kMaxWords = size_t(1) << 20;
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, Hash, std::equal_to<>> index_;
  std::vector<TokenId> ids_;
};

struct BpeOptions {
  Split split = Split::Gpt2;
  bool nfc = false;               // raw text NFC-normalized first
  bool add_prefix_space = false;  // a space before raw text that does not start with one
  bool ignore_merges = false;     // a pre-token that is a whole token is kept (Llama-3)
};
using Merges = std::vector<std::pair<std::string, std::string>>;  // byte-level spellings, by rank

std::unique_ptr<Tokenizer> make_bpe(Vocab vocab, const Merges& merges, BpeOptions options);
// SentencePiece's BPE on a GGUF vocabulary: merges by score, byte fallback, "▁" for spaces.
std::unique_ptr<Tokenizer> make_spm(Vocab vocab, std::vector<float> scores, bool add_space_prefix);

// A tokenizer.json's byte-level BPE as read, before it becomes a Tokenizer (the GGUF writer takes
// its parts as they are).
struct TokenizerJson {
  Vocab vocab;
  Merges merges;
  BpeOptions options;
};
TokenizerJson read_tokenizer_json(const std::filesystem::path& path);

std::unique_ptr<Tokenizer> open_gguf_tokenizer(const std::filesystem::path& path);
std::unique_ptr<Tokenizer> open_tokenizer_json(const std::filesystem::path& path);
std::unique_ptr<Tokenizer> open_sentencepiece(const std::filesystem::path& path);

}  // namespace upcycle::tok

// What every tokenizer shares: id checks, added-token matching, and choosing the loader for a path.
#include <algorithm>
#include <fstream>

#include "core/error.hpp"
#include "text/tokenizer_impl.hpp"

namespace upcycle {

void Tokenizer::check_ids(std::span<const TokenId> ids) const {
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] < 0 || size_t(ids[i]) >= tokens_.size())
      throw InputError(path_, "token " + std::to_string(i),
                       "id " + std::to_string(ids[i]) + " is outside the vocabulary (0 to " +
                           std::to_string(tokens_.size() - 1) + ")");
}

TokenId Tokenizer::required_bos() const {
  require(bos_.has_value(), path_, "the vocabulary has no BOS token");
  return *bos_;
}

namespace tok {

AddedMatcher::AddedMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  std::erase_if(tokens_, [](const AddedToken& t) { return t.text.empty(); });
  std::stable_sort(tokens_.begin(), tokens_.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.text.size() > b.text.size(); });
  for (size_t i = 0; i < tokens_.size(); ++i) by_first_byte_[uint8_t(tokens_[i].text[0])].push_back(uint32_t(i));
}

size_t AddedMatcher::match_at(std::string_view text, size_t pos) const {
  for (uint32_t k : by_first_byte_[uint8_t(text[pos])])
    if (text.substr(pos).starts_with(tokens_[k].text)) return k;
  return std::string_view::npos;
}

namespace {

bool is_space_at(std::string_view s, size_t i) { return char_class(utf8_at(s, i).cp) == kSpace; }

// Where the white space before `end` (back to `begin`) starts.
size_t strip_back(std::string_view s, size_t begin, size_t end) {
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && (uint8_t(s[start]) & 0xC0) == 0x80) --start;  // back to a lead byte
    if (utf8_at(s, start).len != end - start || !is_space_at(s, start)) break;
    end = start;
  }
  return end;
}

size_t strip_forward(std::string_view s, size_t i) {
  while (i < s.size() && is_space_at(s, i)) i += utf8_at(s, i).len;
  return i;
}

}  // namespace

std::vector<Fragment> AddedMatcher::partition(std::string_view text) const {
  std::vector<Fragment> out;
  size_t raw = 0;  // where the pending raw text starts
  for (size_t pos = 0; pos < text.size();) {
    size_t k = match_at(text, pos);
    if (k == std::string_view::npos) {
      ++pos;
      continue;
    }
    const AddedToken& t = tokens_[k];
    size_t raw_end = t.lstrip ? strip_back(text, raw, pos) : pos;
    if (raw_end > raw) out.push_back({text.substr(raw, raw_end - raw)});
    out.push_back({{}, t.id});
    pos += t.text.size();
    if (t.rstrip) pos = strip_forward(text, pos);
    raw = pos;
  }
  if (raw < text.size()) out.push_back({text.substr(raw)});
  return out;
}

namespace {

std::string first_bytes(const std::filesystem::path& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string s(n, '\0');
  in.read(s.data(), std::streamsize(n));
  s.resize(size_t(in.gcount()));
  return s;
}

std::filesystem::path tokenizer_in_folder(const std::filesystem::path& dir) {
  for (const char* name : {"tokenizer.model", "tokenizer.json"})
    if (std::filesystem::is_regular_file(dir / name)) return dir / name;
  std::vector<std::filesystem::path> ggufs;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (entry.path().extension() == ".gguf" && entry.is_regular_file()) ggufs.push_back(entry.path());
  require(ggufs.size() == 1, dir,
          ggufs.empty() ? "no tokenizer.model, tokenizer.json or .gguf file in this folder"
                        : "several .gguf files in this folder: name the one to use");
  return ggufs[0];
}

}  // namespace

}  // namespace tok

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& path) {
  std::error_code ec;
  require(std::filesystem::exists(path, ec), path, "no such file or folder");
  if (std::filesystem::is_directory(path, ec)) return load_tokenizer(tok::tokenizer_in_folder(path));
  // By content rather than name: GGUF's magic, JSON's first bracket; anything else goes to
  // SentencePiece (a protocol buffer has no magic).
  std::string head = tok::first_bytes(path, 64);
  if (head.starts_with("GGUF")) return tok::open_gguf_tokenizer(path);
  size_t first = head.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && (head[first] == '{' || head[first] == '[')) return tok::open_tokenizer_json(path);
  return tok::open_sentencepiece(path);
}

}  // namespace upcycle

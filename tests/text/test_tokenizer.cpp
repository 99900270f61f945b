// Tokenizers: llama.cpp's test vectors (GPT-2 byte-level BPE, Llama-2 SentencePiece, also through
// the sentencepiece library), the pre-tokenizer split of each family, tokenizer.json reading, the
// `tokenize` command, and bad input.
#include <doctest/doctest.h>

#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/gguf_file.hpp"
#include "tests/common/fixtures.hpp"
#include "tests/common/gguf_writer.hpp"
#include "text/tokenizer.hpp"
#include "text/tokenizer_impl.hpp"

using namespace upcycle;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Case {
  std::string text;
  std::vector<TokenId> ids;
};

// NAME.inp holds strings each followed by "\n__ggml_vocab_test__\n"; NAME.out the ids of each,
// one line per string.
std::vector<Case> test_vectors(const fs::path& gguf) {
  std::vector<Case> cases;
  for (std::string& s : test::vocab_test_strings(gguf.string() + ".inp")) cases.push_back({std::move(s), {}});
  std::istringstream out(test::read_file(gguf.string() + ".out"));
  std::string line;
  for (Case& c : cases) {
    REQUIRE(std::getline(out, line));
    std::istringstream ids(line);
    for (TokenId id; ids >> id;) c.ids.push_back(id);
  }
  CHECK_FALSE(std::getline(out, line));
  REQUIRE(cases.size() == 46);
  return cases;
}

void check_vectors(const Tokenizer& t, const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    auto ids = t.encode(c.text);
    CHECK_MESSAGE(ids == c.ids, "text: '" << c.text << "'");
    CHECK_MESSAGE(t.decode(ids) == c.text, "text: '" << c.text << "'");
  }
}

std::vector<std::string> split(tok::Split s, std::string_view text) {
  std::vector<std::string_view> words;
  tok::pre_split(s, text, words);
  return {words.begin(), words.end()};
}

using Words = std::vector<std::string>;

// ---- a small byte-level tokenizer.json: the 256 byte tokens (ids 0-255 in byte order), then
// merged tokens from 256 on.

const std::array<std::string, 256> kAlphabet = tok::byte_level_alphabet();
std::string bl(std::string_view raw) {  // raw bytes in the byte-level alphabet
  std::string out;
  for (char c : raw) out += kAlphabet[uint8_t(c)];
  return out;
}

json small_tokenizer(const std::vector<std::string>& merged, const json& merges, const json& pre_tokenizer) {
  json vocab = json::object();
  for (size_t b = 0; b < 256; ++b) vocab[kAlphabet[b]] = b;
  for (size_t i = 0; i < merged.size(); ++i) vocab[bl(merged[i])] = 256 + i;
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre_tokenizer},
          {"model", {{"type", "BPE"}, {"unk_token", nullptr}, {"vocab", vocab}, {"merges", merges}}}};
}

json byte_level_pre(bool add_prefix_space = false) {
  return {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space}, {"use_regex", true}};
}

fs::path write_json(const fs::path& path, const json& j) {
  test::write_file(path, j.dump());
  return path;
}

// Raw bytes as the small tokenizer's byte ids.
std::vector<TokenId> bytes_of(std::string_view raw) {
  std::vector<TokenId> ids;
  for (char c : raw) ids.push_back(uint8_t(c));
  return ids;
}

template <class... Parts>
std::vector<TokenId> cat(const Parts&... parts) {
  std::vector<TokenId> out;
  (out.insert(out.end(), parts.begin(), parts.end()), ...);
  return out;
}

// ---- a SentencePiece tokenizer.model, in protocol buffer wire format, from a GGUF vocabulary.

std::string varint(uint64_t v) {
  std::string out;
  for (; v >= 0x80; v >>= 7) out += char(0x80 | (v & 0x7f));
  return out += char(v);
}
std::string field(int number, std::string_view bytes) {  // length-delimited
  return varint(uint64_t(number) << 3 | 2) + varint(bytes.size()) + std::string(bytes);
}
std::string field_varint(int number, uint64_t v) { return varint(uint64_t(number) << 3) + varint(v); }
std::string field_float(int number, float f) {
  std::string out = varint(uint64_t(number) << 3 | 5);
  char b[4];
  std::memcpy(b, &f, 4);
  return out.append(b, 4);
}

// ModelProto: pieces (1: piece, 2: score, 3: type), trainer_spec (3: model_type BPE = 2,
// 35: byte_fallback), normalizer_spec (1: name, 3: add_dummy_prefix, 4: remove_extra_whitespaces).
void write_sentencepiece_model(const GgufFile& gguf, const fs::path& path) {
  const auto& m = gguf.metadata();
  std::string proto;
  for (size_t i = 0; i < m["tokenizer.ggml.tokens"].size(); ++i) {
    std::string piece = field(1, m["tokenizer.ggml.tokens"][i].get<std::string>()) +
                        field_float(2, m["tokenizer.ggml.scores"][i].get<float>()) +
                        field_varint(3, m["tokenizer.ggml.token_type"][i].get<uint64_t>());
    proto += field(1, piece);
  }
  proto += field(2, field_varint(3, 2) + field_varint(35, 1));
  proto += field(3, field(1, "identity") + field_varint(3, 1) + field_varint(4, 0));
  test::write_file(path, proto);
}

// What load_tokenizer says about a path, or "" when it loads; the message must start with the
// file at fault (by default the path).
std::string load_error(const fs::path& path, fs::path at_fault = {}) {
  if (at_fault.empty()) at_fault = path;
  try {
    load_tokenizer(path);
    return "";
  } catch (const InputError& e) {
    CHECK_MESSAGE(std::string(e.what()).rfind(at_fault.string() + ": ", 0) == 0, e.what());
    return e.what();
  }
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("tokenizer: GPT-2 byte-level BPE from GGUF reproduces llama.cpp's test vectors") {
  auto dir = test::shared_tokenizers();
  if (!dir) return;
  fs::path gguf = *dir / "ggml-vocab-gpt-2.gguf";
  auto t = load_tokenizer(gguf);
  CHECK(t->vocab_size() == 50257);
  CHECK(t->bos_id() == 50256);
  CHECK(t->token(15496) == "Hello");
  CHECK(t->token(995) == "\xC4\xA0world");  // "Ġworld"
  check_vectors(*t, test_vectors(gguf));
  CHECK(t->encode("Hello<|endoftext|> world", true) == std::vector<TokenId>{50256, 15496, 50256, 995});
}

TEST_CASE("tokenizer: a word longer than 64 KiB is merged in pieces cut before a character, losslessly") {
  auto dir = test::shared_tokenizers();
  if (!dir) return;
  auto t = load_tokenizer(*dir / "ggml-vocab-gpt-2.gguf");
  // 3-byte characters: 65536 is not a character start, so the first cut falls at 65535.
  std::string word;
  for (int i = 0; i < 30000; ++i) word += "\xE6\x97\xA5";  // 90000 bytes, no space: one word
  const std::vector<TokenId> ids = t->encode(word);
  std::vector<TokenId> pieces = t->encode(word.substr(0, 65535));
  const std::vector<TokenId> rest = t->encode(word.substr(65535));
  pieces.insert(pieces.end(), rest.begin(), rest.end());
  CHECK(ids == pieces);
  CHECK(t->decode(ids) == word);
}

TEST_CASE("tokenizer: Llama-2 SentencePiece from GGUF reproduces llama.cpp's test vectors") {
  auto dir = test::shared_tokenizers();
  if (!dir) return;
  fs::path gguf = *dir / "ggml-vocab-llama-spm.gguf";
  auto t = load_tokenizer(gguf);
  CHECK(t->vocab_size() == 32000);
  CHECK(t->bos_id() == 1);
  CHECK(t->eos_id() == 2);
  check_vectors(*t, test_vectors(gguf));
  CHECK(t->encode("Hello", true) == std::vector<TokenId>{1, 15043});
  CHECK(t->encode("\xF0\x9F\xA6\x99") == std::vector<TokenId>{29871, 243, 162, 169, 156});  // llama: byte fallback
  CHECK(t->decode(std::vector<TokenId>{1, 15043, 2}) == "<s> Hello</s>");
}

TEST_CASE("tokenizer: random bytes and text round-trip through both GGUF tokenizers") {
  auto dir = test::shared_tokenizers();
  if (!dir) return;
  const std::vector<std::string> pieces = {"a", "Z", "7", " ", "  ", "\n", "\t", "'s", "'LL", "\xC3\xA9", "\xE4\xB8\xAD",
                                           "\xF0\x9F\x98\x80", "\xCC\x81", "\xC2\xA0", "!", "<s", "|>", "\xFF", "\xC3"};
  std::mt19937 rng(7);
  for (const char* name : {"ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-spm.gguf"}) {
    auto t = load_tokenizer(*dir / name);
    for (int n = 0; n < 300; ++n) {
      std::string text;
      for (size_t k = rng() % 40; k > 0; --k) text += n % 2 ? pieces[rng() % pieces.size()] : std::string(1, char(rng()));
      if (text.find("\xE2\x96\x81") != std::string::npos) continue;  // SentencePiece reads "\u2581" as a space
      CHECK_MESSAGE(t->decode(t->encode(text)) == text, name << ": '" << text << "'");
    }
  }
}

TEST_CASE("tokenizer: the real SmolLM2 GGUF: digits alone, chat tokens whole (ids from Hugging Face tokenizers)") {
  auto gguf = test::smollm2_gguf();
  if (!gguf) {
    MESSAGE("skipped: no SmolLM2 GGUF (scripts/fetch-smollm2.sh)");
    return;
  }
  auto t = load_tokenizer(*gguf);
  CHECK(t->vocab_size() == 49152);
  CHECK(t->description() == "byte-level BPE (digits+gpt2 pre-tokenizer)");
  CHECK(t->encode("<|im_start|>user\nWhat is 2+2?<|im_end|>\n") ==
        std::vector<TokenId>{1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198});
  CHECK(t->encode("Hello world! It's 2024.") == std::vector<TokenId>{19556, 905, 17, 657, 506, 216, 34, 32, 34, 36, 30});
  CHECK(t->encode("a\x04b").size() == 2);  // the vocabulary has no byte 0x04: left out, as Hugging Face does
}

TEST_CASE("tokenizer: the sentencepiece library agrees on a tokenizer.model of the Llama-2 vocabulary") {
  auto dir = test::shared_tokenizers();
  if (!dir) return;
  fs::path gguf = *dir / "ggml-vocab-llama-spm.gguf";
  test::ScratchDir scratch;
  fs::create_directories(scratch / "model");
  write_sentencepiece_model(GgufFile::open(gguf), scratch / "model" / "tokenizer.model");
  auto t = load_tokenizer(scratch / "model");  // a folder holding it
  CHECK(t->description() == "SentencePiece (library)");
  CHECK(t->vocab_size() == 32000);
  CHECK(t->bos_id() == 1);
  check_vectors(*t, test_vectors(gguf));
  CHECK(t->encode("Hello", true) == std::vector<TokenId>{1, 15043});
}

TEST_CASE("tokenizer: GPT-2's split: case-sensitive contractions, digit runs, a space before each word") {
  using tok::Split;
  CHECK(split(Split::Gpt2, "Hello world's 123 DON'T  \n\n x") ==
        Words{"Hello", " world", "'s", " 123", " DON", "'", "T", "  \n\n", " x"});
  CHECK(split(Split::Gpt2, "a!!\n\nb ?!Hi") == Words{"a", "!!", "\n", "\n", "b", " ?!", "Hi"});
  CHECK(split(Split::Gpt2, "1234567 3.14") == Words{"1234567", " 3", ".", "14"});
  CHECK(split(Split::Gpt2, "x   ") == Words{"x", "   "});  // trailing white space stays whole
  CHECK(split(Split::Gpt2, "\t\tword") == Words{"\t", "\t", "word"});
  CHECK(split(Split::Gpt2,
              "na\xC3\xAFve caf\xC3\xA9 \xE6\x88\x91\xE6\x83\xB3"
              "apple") == Words{"na\xC3\xAFve", " caf\xC3\xA9",
                                " \xE6\x88\x91\xE6\x83\xB3"
                                "apple"});
  // U+3000 and NBSP are white space, ½ is a number.
  CHECK(split(Split::Gpt2, "a\xE3\x80\x80\xC2\xA0 b \xC2\xBD") ==
        Words{"a", "\xE3\x80\x80\xC2\xA0", " b", " \xC2\xBD"});
  CHECK(split(Split::Gpt2, "").empty());
  CHECK(split(Split::Gpt2, "ok\xFF\xFEok") == Words{"ok", "\xFF\xFE", "ok"});  // bad UTF-8: punctuation-like
}

TEST_CASE("tokenizer: SmolLM2's split: every digit alone, then GPT-2's between them") {
  using tok::Split;
  CHECK(split(Split::DigitsThenGpt2, "a1b 22") == Words{"a", "1", "b", " ", "2", "2"});
  CHECK(split(Split::DigitsThenGpt2, "in 2024, x") == Words{"in", " ", "2", "0", "2", "4", ",", " x"});
}

TEST_CASE("tokenizer: Llama-3's split: contractions in any case, digits in threes, newlines apart") {
  using tok::Split;
  CHECK(split(Split::Llama3, "Hello world's 123 DON'T  \n\n x") ==
        Words{"Hello", " world", "'s", " ", "123", " DON", "'T", "  \n\n", " x"});
  CHECK(split(Split::Llama3, "1234567 12") == Words{"123", "456", "7", " ", "12"});
  CHECK(split(Split::Llama3, "I'VE we'Ll x'\xC5\xBFx") == Words{"I", "'VE", " we", "'Ll", " x", "'\xC5\xBF", "x"});
  CHECK(split(Split::Llama3, "a!!\n\nb ?!Hi") == Words{"a", "!!\n\n", "b", " ?!", "Hi"});
  CHECK(split(Split::Llama3, "x \tword !Hi") == Words{"x", " ", "\tword", " !", "Hi"});
  CHECK(split(Split::Llama3, "(x)\r\n  y\n") == Words{"(x", ")\r\n", " ", " y", "\n"});
  CHECK(split(Split::Llama3, "a \n \n  b") == Words{"a", " \n \n", " ", " b"});
}

TEST_CASE("tokenizer: Qwen2's split is Llama-3's with single digits") {
  using tok::Split;
  CHECK(split(Split::Qwen2, "x 1234 I'VE") == Words{"x", " ", "1", "2", "3", "4", " I", "'VE"});
}

TEST_CASE("tokenizer: NFC composes, reorders marks, keeps exclusions apart and bad bytes as they are") {
  CHECK(tok::nfc("plain ASCII, untouched") == "plain ASCII, untouched");
  CHECK(tok::nfc("cafe\xCC\x81") == "caf\xC3\xA9");                           // e + U+0301 -> U+00E9
  CHECK(tok::nfc("\xE2\x84\xAB") == "\xC3\x85");                              // U+212B (a singleton) -> U+00C5
  CHECK(tok::nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8") == "\xEA\xB0\x81");  // Hangul L V T -> U+AC01
  CHECK(tok::nfc("a\xCC\x82\xCC\xA3") == "\xE1\xBA\xAD");                     // a + U+0302 + U+0323 -> U+1EAD
  CHECK(tok::nfc("a\xCC\xA3\xCC\x82") == "\xE1\xBA\xAD");                     // either order of the marks
  CHECK(tok::nfc("\xE0\xA5\x98") == "\xE0\xA4\x95\xE0\xA4\xBC");              // U+0958: excluded from composition
  CHECK(tok::nfc("a\xCC\x81\xCC\x81") == "\xC3\xA1\xCC\x81");                 // the second acute is blocked
  CHECK(tok::nfc("e\xCC\xA7\xCC\x81") == "\xC8\xA9\xCC\x81");                 // U+0229 + U+0301
  CHECK(tok::nfc("\xFF"
                 "e\xCC\x81\xC3") == "\xFF\xC3\xA9\xC3");  // bytes that are not UTF-8 stay
}

TEST_CASE("tokenizer: tokenizer.json from the GPT-2 vocabulary equals the GGUF, in a folder with its config") {
  auto dir = test::shared_tokenizers();
  if (!dir) return;
  fs::path gguf = *dir / "ggml-vocab-gpt-2.gguf";
  const GgufFile file = GgufFile::open(gguf);
  const auto& m = file.metadata();
  json vocab = json::object(), pair_merges = json::array();
  for (size_t i = 0; i < m["tokenizer.ggml.tokens"].size(); ++i)
    vocab[m["tokenizer.ggml.tokens"][i].get<std::string>()] = i;
  for (const auto& merge : m["tokenizer.ggml.merges"]) {
    std::string s = merge.get<std::string>();
    pair_merges.push_back(json::array({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)}));
  }
  json j = {{"added_tokens", json::array({{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}}})},
            {"normalizer", nullptr},
            {"pre_tokenizer", byte_level_pre()},
            {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", m["tokenizer.ggml.merges"]}}}};
  test::ScratchDir scratch;
  write_json(scratch / "tokenizer.json", j);
  write_json(scratch / "tokenizer_config.json",
             {{"bos_token", "<|endoftext|>"}, {"eos_token", {{"content", "<|endoftext|>"}, {"lstrip", false}}}});
  auto t = load_tokenizer(scratch.path());
  CHECK(t->bos_id() == 50256);
  CHECK(t->eos_id() == 50256);
  check_vectors(*t, test_vectors(gguf));

  j["model"]["merges"] = pair_merges;  // the newer form: pairs
  write_json(scratch / "tokenizer.json", j);
  check_vectors(*load_tokenizer(scratch / "tokenizer.json"), test_vectors(gguf));
}

TEST_CASE("tokenizer: merges by rank, ignore_merges, added tokens kept whole, lstrip and rstrip") {
  test::ScratchDir scratch;
  // 256 "ab", 257 "bc", 258 "abc", 259 "xyz" (no merge makes it), 260 " ab"
  std::vector<std::string> merged = {"ab", "bc", "abc", "xyz", " ab"};
  json merges = {"b c", "a b", bl(" ") + " ab"};  // "bc" outranks "ab"
  json j = small_tokenizer(merged, merges, byte_level_pre());
  auto t = load_tokenizer(write_json(scratch / "t.json", j));
  CHECK(t->description() == "byte-level BPE (gpt2 pre-tokenizer)");
  CHECK(t->encode("abc") == std::vector<TokenId>{'a', 257});
  CHECK(t->encode("ab ab") == std::vector<TokenId>{256, 260});
  CHECK(t->encode("xyz") == bytes_of("xyz"));
  CHECK(t->decode(std::vector<TokenId>{256, 260, 'c'}) == "ab abc");
  CHECK_FALSE(t->bos_id().has_value());
  CHECK_THROWS_AS(t->encode("x", true), InputError);  // no BOS to put first
  CHECK_THROWS_AS(t->decode(std::vector<TokenId>{261}), InputError);

  j["model"]["ignore_merges"] = true;  // a pre-token that is a token stays whole (Llama-3)
  t = load_tokenizer(write_json(scratch / "t.json", j));
  CHECK(t->encode("xyz abc") == cat(std::vector<TokenId>{259}, bytes_of(" "), std::vector<TokenId>{'a', 257}));

  j["model"]["ignore_merges"] = false;
  j["model"]["vocab"]["<m>"] = 261;
  j["model"]["vocab"]["<s>"] = 262;
  j["added_tokens"] = {{{"id", 261}, {"content", "<m>"}, {"special", true}, {"lstrip", true}, {"rstrip", true}},
                       {{"id", 262}, {"content", "<s>"}, {"special", true}}};
  t = load_tokenizer(write_json(scratch / "t.json", j));
  CHECK(t->encode("ab <m>  ab<s>ab") == std::vector<TokenId>{256, 261, 256, 262, 256});
  CHECK(t->encode("<s><s>") == std::vector<TokenId>{262, 262});
  CHECK(t->decode(std::vector<TokenId>{262, 256}) == "<s>ab");

  j["pre_tokenizer"] = byte_level_pre(true);  // a space before raw text that lacks one
  t = load_tokenizer(write_json(scratch / "t.json", j));
  CHECK(t->encode("ab<s>ab") == std::vector<TokenId>{260, 262, 260});

  j["normalizer"] = {{"type", "NFC"}};  // Qwen2's: composed before splitting
  t = load_tokenizer(write_json(scratch / "t.json", j));
  CHECK(t->description() == "byte-level BPE (gpt2 pre-tokenizer, NFC, prefix space)");
  CHECK(t->encode("ab e\xCC\x81") == t->encode("ab \xC3\xA9"));
  CHECK(t->encode("ab e\xCC\x81") !=
        load_tokenizer(write_json(scratch / "u.json", small_tokenizer(merged, merges, byte_level_pre(true))))
            ->encode("ab e\xCC\x81"));
}

TEST_CASE("tokenizer: tokenizer.json pre-tokenizers by shape: Llama-3, Qwen2 and SmolLM2") {
  const std::string llama3 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  const std::string qwen2 =
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
  auto split_then_byte_level = [](const std::string& regex) {
    return json{{"type", "Sequence"},
                {"pretokenizers",
                 {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
                  {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  };
  // Merges that would join what the splits keep apart: "12" "123" "1234", "'S", " x".
  std::vector<std::string> merged = {"12", "123", "1234", "'S", " x"};
  json merges = json::array();
  for (auto [a, b] : {std::pair{"1", "2"}, {"12", "3"}, {"123", "4"}, {"'", "S"}})
    merges.push_back(json::array({a, b}));
  merges.push_back(json::array({bl(" "), "x"}));
  test::ScratchDir scratch;
  auto ids = [&](const json& pre, const std::string& text) {
    return load_tokenizer(write_json(scratch / "t.json", small_tokenizer(merged, merges, pre)))->encode(text);
  };
  const std::string text = "1234 x'S";
  CHECK(ids(byte_level_pre(), text) == std::vector<TokenId>{258, 260, '\'', 'S'});
  CHECK(ids(split_then_byte_level(llama3), text) == std::vector<TokenId>{257, '4', 260, 259});
  CHECK(ids(split_then_byte_level(qwen2), text) == std::vector<TokenId>{'1', '2', '3', '4', 260, 259});
  json digits = {{"type", "Sequence"},
                 {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, byte_level_pre()}}};
  CHECK(ids(digits, text) == std::vector<TokenId>{'1', '2', '3', '4', 260, '\'', 'S'});
}

TEST_CASE("tokenizer: malformed or unsupported tokenizer.json is an InputError naming the file and the problem") {
  test::ScratchDir scratch;
  const json good = small_tokenizer({"ab"}, {"a b"}, byte_level_pre());
  CHECK(load_error(write_json(scratch / "t.json", good)).empty());
  auto error_of = [&](const std::function<void(json&)>& edit) {
    json j = good;
    edit(j);
    return load_error(write_json(scratch / "t.json", j));
  };
  test::write_file(scratch / "bad.json", "{\"model\": {\"vocab\": ");
  CHECK(contains(load_error(scratch / "bad.json"), "not valid JSON"));
  CHECK(contains(error_of([](json& j) { j["model"]["vocab"] = json::array({"a"}); }), "model.vocab"));
  CHECK(contains(error_of([](json& j) { j["model"]["vocab"]["zz"] = "7"; }), "model.vocab['zz']"));
  CHECK(contains(error_of([](json& j) { j["model"]["vocab"]["zz"] = 12345; }), "id must be an integer"));
  CHECK(contains(error_of([](json& j) { j["model"]["vocab"]["zz"] = 5; }), "already"));
  CHECK(contains(error_of([](json& j) { j["model"]["merges"] = {"a b c"}; }), "model.merges[0]"));
  CHECK(contains(error_of([](json& j) {
                   j["model"]["merges"] = json::array({json::array({"a", 5})});
                 }),
                 "model.merges[0]"));
  CHECK(contains(error_of([](json& j) { j["model"]["merges"] = {"a q\xC3\xA9"}; }), "merge 0"));
  CHECK(contains(error_of([](json& j) { j["model"]["merges"] = 3; }), "model.merges"));
  CHECK(contains(error_of([](json& j) { j["model"]["type"] = "WordPiece"; }), "model.type"));
  CHECK(
      contains(error_of([](json& j) { j["model"]["continuing_subword_prefix"] = "##"; }), "continuing_subword_prefix"));
  CHECK(contains(error_of([](json& j) { j["model"]["unk_token"] = "<nope>"; }), "model.unk_token"));
  CHECK(contains(error_of([](json& j) { j.erase("model"); }), "model: missing"));
  CHECK(contains(error_of([](json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }), "normalizer"));
  CHECK(error_of([](json& j) { j["normalizer"] = {{"type", "NFC"}}; }).empty());
  CHECK(contains(error_of([](json& j) {
                   j["pre_tokenizer"] = {{"type", "Whitespace"}};
                 }),
                 "pre_tokenizer: not supported"));
  CHECK(contains(error_of([](json& j) { j["pre_tokenizer"] = nullptr; }), "pre_tokenizer: not supported"));
  CHECK(contains(error_of([](json& j) { j["pre_tokenizer"]["use_regex"] = "yes"; }), "use_regex"));
  CHECK(contains(error_of([](json& j) {
                   j["added_tokens"] = json::array({{{"id", "1"}, {"content", "<x>"}}});
                 }),
                 "added_tokens[0]"));
  CHECK(contains(error_of([](json& j) { j["added_tokens"] = json::array({{{"id", 1}}}); }), "added_tokens[0].content"));
  CHECK(contains(error_of([](json& j) {
                   j["added_tokens"] = json::array({{{"id", 1}, {"content", "<x>"}, {"single_word", true}}});
                 }),
                 "single_word"));
  CHECK(contains(error_of([](json& j) { j = json::array(); }), "must be a JSON object"));

  write_json(scratch / "tokenizer_config.json", {{"bos_token", "<nope>"}});
  CHECK(contains(load_error(write_json(scratch / "t.json", good), scratch / "tokenizer_config.json"), "bos_token"));
}

TEST_CASE("tokenizer: GGUF without a usable tokenizer, and paths that hold none, are InputErrors") {
  test::ScratchDir scratch;
  using Keys = std::map<std::string, test::GgufValue>;
  auto gguf_error = [&](const std::function<void(Keys&)>& edit) {
    std::vector<std::string> tokens(kAlphabet.begin(), kAlphabet.end());
    tokens.push_back("ab");
    Keys keys = {{"general.architecture", test::gguf_string("llama")},
                 {"tokenizer.ggml.model", test::gguf_string("gpt2")},
                 {"tokenizer.ggml.pre", test::gguf_string("gpt-2")},
                 {"tokenizer.ggml.tokens", test::gguf_strings(tokens)},
                 {"tokenizer.ggml.merges", test::gguf_strings({"a b"})}};
    edit(keys);
    test::GgufWriter w;
    for (const auto& [key, value] : keys) w.set(key, value);
    w.write(scratch / "t.gguf");
    return load_error(scratch / "t.gguf");
  };
  CHECK(gguf_error([](Keys&) {}).empty());
  CHECK(contains(gguf_error([](Keys& k) { k.insert_or_assign("tokenizer.ggml.model", test::gguf_u32(2)); }),
                 "tokenizer.ggml.model: must be a string"));
  CHECK(contains(gguf_error([](Keys& k) { k.insert_or_assign("tokenizer.ggml.model", test::gguf_string("bert")); }),
                 "'bert' is not supported"));
  CHECK(contains(gguf_error([](Keys& k) { k.insert_or_assign("tokenizer.ggml.pre", test::gguf_string("tekken")); }),
                 "pre-tokenizer 'tekken'"));
  CHECK(contains(gguf_error([](Keys& k) { k.insert_or_assign("tokenizer.ggml.tokens", test::gguf_u32(1)); }),
                 "tokenizer.ggml.tokens: must be an array of strings"));
  CHECK(contains(gguf_error([](Keys& k) { k.insert_or_assign("tokenizer.ggml.merges", test::gguf_strings({"ab"})); }),
                 "not two tokens"));
  CHECK(contains(gguf_error([](Keys& k) { k.insert_or_assign("tokenizer.ggml.bos_token_id", test::gguf_u32(9999)); }),
                 "tokenizer.ggml.bos_token_id"));
  CHECK(contains(gguf_error([](Keys& k) {
                   k.insert_or_assign("tokenizer.ggml.token_type",
                                      test::gguf_array(test::gguf_type::I32, {test::gguf_i32(1)}));
                 }),
                 "has 1 entries for 257 tokens"));
  CHECK(contains(gguf_error([](Keys& k) { k.insert_or_assign("tokenizer.ggml.model", test::gguf_string("llama")); }),
                 "tokenizer.ggml.scores: missing"));

  test::GgufWriter bare;
  bare.set("general.architecture", test::gguf_string("llama"));
  bare.write(scratch / "bare.gguf");
  CHECK(contains(load_error(scratch / "bare.gguf"), "tokenizer.ggml.model: missing"));

  CHECK(contains(load_error(scratch / "nothing-here"), "no such file"));
  fs::create_directories(scratch / "empty");
  CHECK(contains(load_error(scratch / "empty"), "no tokenizer.model, tokenizer.json or .gguf"));
  test::write_file(scratch / "junk.bin", "\x01\x02 not a tokenizer");
  CHECK(contains(load_error(scratch / "junk.bin"), "not a GGUF file, a tokenizer.json or a SentencePiece model"));
}

TEST_CASE("tokenizer: upcycle tokenize encodes, decodes, and reports misuse and bad input") {
  test::ScratchDir scratch;
  json j = small_tokenizer({"ab", " ab"}, {"a b", bl(" ") + " ab"}, byte_level_pre());
  j["model"]["vocab"]["<s>"] = 258;
  j["added_tokens"] = json::array({{{"id", 258}, {"content", "<s>"}, {"special", true}}});
  const std::string tok = "--tokenizer '" + write_json(scratch / "tokenizer.json", j).string() + "'";
  write_json(scratch / "tokenizer_config.json", {{"bos_token", "<s>"}, {"eos_token", "<s>"}});

  auto r = test::run_upcycle("tokenize " + tok + " --text 'ab ab!'");
  CHECK(r.code == 0);
  CHECK(r.out == "256 257 33\n");
  CHECK(test::run_upcycle("tokenize " + tok + " --text 'ab' --bos").out == "258 256\n");
  CHECK(test::run_upcycle("tokenize " + tok + " --text ''").out == "\n");
  test::write_file(scratch / "in.txt", "ab\nab");
  CHECK(test::run_upcycle("tokenize " + tok + " --file '" + (scratch / "in.txt").string() + "'").out == "256 10 256\n");
  r = test::run_upcycle("tokenize " + tok + " --decode --text ' 258 256\n257 33 '");
  CHECK(r.code == 0);
  CHECK(r.out == "<s>ab ab!");
  CHECK(test::run_upcycle("tokenize --help").out.find("Usage: upcycle tokenize") != std::string::npos);

  CHECK(test::run_upcycle("tokenize " + tok).code == 1);  // neither --text nor --file
  CHECK(test::run_upcycle("tokenize " + tok + " --text a --file b").code == 1);
  CHECK(test::run_upcycle("tokenize " + tok + " --text 1 --decode --bos").code == 1);
  CHECK(test::run_upcycle("tokenize --text a").code == 1);
  r = test::run_upcycle("tokenize " + tok + " --decode --text '1 2x'");
  CHECK(r.code == 2);
  CHECK(r.err.find("--text: token 1: '2x' is not a token id") != std::string::npos);
  r = test::run_upcycle("tokenize " + tok + " --decode --text '1 259'");
  CHECK(r.code == 2);
  CHECK(r.err.find("id 259 is outside the vocabulary (0 to 258)") != std::string::npos);
  r = test::run_upcycle("tokenize --tokenizer '" + (scratch / "missing").string() + "' --text a");
  CHECK(r.code == 2);
  CHECK(r.err.find("missing") != std::string::npos);
  CHECK(test::run_upcycle("tokenize " + tok + " --file '" + (scratch / "nope.txt").string() + "'").code == 2);
}

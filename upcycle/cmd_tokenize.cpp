// `upcycle tokenize --tokenizer PATH (--file F | --text S) [--decode] [--bos]`: text to token ids
// and back with the tokenizer of a GGUF file, a tokenizer.json, a tokenizer.model or a model folder.
#include <charconv>
#include <cstdio>

#include "core/error.hpp"
#include "core/mapped_file.hpp"
#include "text/tokenizer.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"

namespace upcycle {

namespace {

std::string read_all(const std::filesystem::path& path) {
  auto file = ReadOnlyFile::open(path);
  std::string bytes(file->size(), '\0');
  file->read(0, std::as_writable_bytes(std::span(bytes)));
  return bytes;
}

// Ids separated by white space; `source` names the input in errors.
std::vector<TokenId> parse_ids(std::string_view text, const std::string& source) {
  std::vector<TokenId> ids;
  constexpr std::string_view kSpace = " \t\r\n";
  for (size_t i = text.find_first_not_of(kSpace); i != std::string_view::npos; i = text.find_first_not_of(kSpace, i)) {
    size_t end = std::min(text.find_first_of(kSpace, i), text.size());
    std::string_view word = text.substr(i, end - i);
    TokenId id = 0;
    auto [ptr, ec] = std::from_chars(word.data(), word.data() + word.size(), id);
    if (ec != std::errc() || ptr != word.data() + word.size())
      throw InputError(source, "token " + std::to_string(ids.size()),
                       std::string("'").append(word.substr(0, 40)).append("' is not a token id"));
    ids.push_back(id);
    i = end;
  }
  return ids;
}

std::string join_ids(const std::vector<TokenId>& ids) {
  std::string out;
  out.reserve(ids.size() * 7 + 1);
  char buf[16];
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out.append(buf, std::to_chars(buf, buf + sizeof buf, ids[i]).ptr);
  }
  return out += '\n';
}

}  // namespace

int cmd_tokenize(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle tokenize --tokenizer PATH (--file F | --text S) [--decode] [--bos]";
  spec.summary =
      "Encodes text to token ids (printed separated by spaces), or with --decode, ids to text (printed as\n"
      "is). The tokenizer comes from a GGUF file, a Hugging Face tokenizer.json, a SentencePiece\n"
      "tokenizer.model, or a model folder holding one of them. Special tokens written in the text\n"
      "(\"<|im_start|>\") are kept whole.";
  spec.options.add_options()
      ("tokenizer", cli::po::value<std::string>()->required(), "GGUF file, tokenizer.json, tokenizer.model or folder")
      ("file", cli::po::value<std::string>(), "read the input from this file")
      ("text", cli::po::value<std::string>(), "the input itself")
      ("decode", "the input is token ids: print the text they stand for")
      ("bos", "put the BOS token first (encoding)");
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  if (vm->count("file") == vm->count("text")) throw UsageError("give one of --file and --text");
  bool decode = vm->count("decode") > 0;
  if (decode && vm->count("bos")) throw UsageError("--bos applies to encoding, not to --decode");

  auto tokenizer = load_tokenizer((*vm)["tokenizer"].as<std::string>());
  bool from_file = vm->count("file") > 0;
  std::string source = from_file ? (*vm)["file"].as<std::string>() : "--text";
  std::string input = from_file ? read_all(source) : (*vm)["text"].as<std::string>();
  std::string output = decode ? tokenizer->decode(parse_ids(input, source))
                              : join_ids(tokenizer->encode(input, vm->count("bos") > 0));
  std::fwrite(output.data(), 1, output.size(), stdout);
  return 0;
}

}  // namespace upcycle

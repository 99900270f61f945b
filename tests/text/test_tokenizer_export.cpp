// Hugging Face tokenizer files made from a GGUF's vocabulary: the tokenizer.json encodes as the
// GGUF does for every byte-level BPE family, tokenizer_config.json and generation_config.json carry
// the special tokens and chat template, and vocabularies without a Hugging Face form are skipped.
#include <doctest/doctest.h>

#include <map>

#include <nlohmann/json.hpp>

#include "core/gguf_file.hpp"
#include "formats/checkpoint_writer.hpp"
#include "formats/open_checkpoint.hpp"
#include "tests/common/fixtures.hpp"
#include "tests/common/gguf_writer.hpp"
#include "text/tokenizer.hpp"
#include "text/tokenizer_export.hpp"

using namespace upcycle;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// llama.cpp's test strings for the GPT-2 vocabulary, plus text where the families split apart.
std::vector<std::string> test_strings(const fs::path& dir) {
  std::vector<std::string> strings = test::vocab_test_strings(dir / "ggml-vocab-gpt-2.gguf.inp");
  strings.insert(strings.end(), {"I'VE DON'T you'RE", "1 12 123 1234 12345", "a \n\n  b\r\n\tc \r\r\n  \n",
                                 "<|endoftext|>Hi<|endoftext|> x", "caf\xc3\xa9 e\xcc\x81 \xe4\xbd\xa0\xe5\xa5\xbd"});
  return strings;
}

// The generated files written into dir, by name; a file that cannot be made is left out.
std::map<std::string, std::string> write_files(const std::vector<GeneratedFile>& files, const fs::path& dir) {
  std::map<std::string, std::string> made;
  for (const GeneratedFile& f : files)
    if (auto text = f.contents()) {
      test::write_file(dir / f.name, *text);
      made[f.name] = *text;
    }
  return made;
}

void check_same_ids(const Tokenizer& a, const Tokenizer& b, const std::vector<std::string>& strings) {
  REQUIRE(a.vocab_size() == b.vocab_size());
  CHECK(a.bos_id() == b.bos_id());
  CHECK(a.eos_id() == b.eos_id());
  for (const std::string& s : strings) CHECK_MESSAGE(a.encode(s) == b.encode(s), s);
}

// The GPT-2 vocabulary rewritten with another pre-tokenizer name, a chat template and BOS added.
fs::path gpt2_vocab_as(const fs::path& gpt2, const std::string& pre, const fs::path& out) {
  GgufFile src = GgufFile::open(gpt2);
  auto strings = [&](const char* key) { return src.metadata()[key].get<std::vector<std::string>>(); };
  std::vector<test::GgufValue> types;
  for (const json& t : src.metadata()["tokenizer.ggml.token_type"]) types.push_back(test::gguf_i32(t.get<int32_t>()));
  test::GgufWriter w;
  w.set("general.architecture", test::gguf_string("gpt2"));
  w.set("tokenizer.ggml.model", test::gguf_string("gpt2"));
  w.set("tokenizer.ggml.pre", test::gguf_string(pre));
  w.set("tokenizer.ggml.tokens", test::gguf_strings(strings("tokenizer.ggml.tokens")));
  w.set("tokenizer.ggml.token_type", test::gguf_array(test::gguf_type::I32, types));
  w.set("tokenizer.ggml.merges", test::gguf_strings(strings("tokenizer.ggml.merges")));
  w.set("tokenizer.ggml.bos_token_id", test::gguf_u32(50256));
  w.set("tokenizer.ggml.eos_token_id", test::gguf_u32(50256));
  w.set("tokenizer.ggml.add_bos_token", test::gguf_bool(true));
  w.set("tokenizer.chat_template", test::gguf_string("{% for m in messages %}{{ m['content'] }}{% endfor %}"));
  w.write(out);
  return out;
}

}  // namespace

TEST_CASE("tokenizer export: the GPT-2 vocabulary's tokenizer.json encodes as the GGUF does") {
  auto dir = test::shared_tokenizers();
  if (!dir) return;
  const fs::path gguf = *dir / "ggml-vocab-gpt-2.gguf";
  test::ScratchDir out;
  auto made = write_files(hf_tokenizer_files(GgufFile::open(gguf), test::tiny_config()), out.path());
  REQUIRE(made.size() == 3);
  check_same_ids(*load_tokenizer(out / "tokenizer.json"), *load_tokenizer(gguf), test_strings(*dir));

  const json config = json::parse(made["tokenizer_config.json"]);
  CHECK(config["bos_token"] == "<|endoftext|>");
  CHECK(config["eos_token"] == "<|endoftext|>");
  CHECK(config["add_bos_token"] == false);
  CHECK(config["model_max_length"] == 64);
  CHECK(config["tokenizer_class"] == "PreTrainedTokenizerFast");
  CHECK_FALSE(config.contains("chat_template"));
  CHECK(json::parse(made["tokenizer.json"])["post_processor"].is_null());
  const json generation = json::parse(made["generation_config.json"]);
  CHECK(generation["bos_token_id"] == 50256);
  CHECK(generation["eos_token_id"] == 50256);
}

TEST_CASE("tokenizer export: each pre-tokenizer family round-trips through tokenizer.json") {
  auto dir = test::shared_tokenizers();
  if (!dir) return;
  const auto strings = test_strings(*dir);
  for (const char* pre : {"gpt-2", "default", "smollm", "llama-bpe", "llama3", "qwen2"}) {
    CAPTURE(pre);
    test::ScratchDir out;
    const fs::path gguf = gpt2_vocab_as(*dir / "ggml-vocab-gpt-2.gguf", pre, out / "vocab.gguf");
    auto made = write_files(hf_tokenizer_files(GgufFile::open(gguf), test::tiny_config()), out.path());
    REQUIRE(made.count("tokenizer.json"));
    check_same_ids(*load_tokenizer(out / "tokenizer.json"), *load_tokenizer(gguf), strings);
    const json config = json::parse(made["tokenizer_config.json"]);
    CHECK(config["chat_template"] == "{% for m in messages %}{{ m['content'] }}{% endfor %}");
    CHECK(config["add_bos_token"] == true);
    const json post = json::parse(made["tokenizer.json"])["post_processor"];
    CHECK(post["type"] == "TemplateProcessing");
    CHECK(post["special_tokens"]["<|endoftext|>"]["ids"] == json::array({50256}));
  }
}

TEST_CASE("tokenizer export: SentencePiece and vocabularies without merges get no tokenizer files") {
  test::ScratchDir out;
  auto model = test::random_checkpoint(test::tiny_config("llama"), 1);
  test::write_gguf_model(*model, out / "tiny.gguf");  // a "gpt2" token list without merges
  WriteOptions quiet;
  quiet.progress = false;
  write_hf_folder(*open_checkpoint(out / "tiny.gguf"), out / "hf", quiet);
  CHECK_FALSE(fs::exists(out / "hf" / "tokenizer.json"));
  CHECK_FALSE(fs::exists(out / "hf" / "tokenizer_config.json"));
  CHECK(json::parse(test::read_file(out / "hf" / "generation_config.json"))["eos_token_id"] == 2);

  auto dir = test::shared_tokenizers();
  if (!dir) return;
  auto made = write_files(hf_tokenizer_files(GgufFile::open(*dir / "ggml-vocab-llama-spm.gguf"), test::tiny_config()),
                          out / "hf");
  CHECK(made.size() == 1);
  CHECK(made.count("generation_config.json"));
}

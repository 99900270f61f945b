// A SentencePiece tokenizer.model through the sentencepiece library itself.
#include <sentencepiece_processor.h>

#include "core/error.hpp"
#include "text/tokenizer_impl.hpp"

namespace upcycle::tok {

namespace {

std::optional<TokenId> id_or_none(int id) { return id >= 0 ? std::optional<TokenId>(id) : std::nullopt; }

std::vector<std::string> pieces(const sentencepiece::SentencePieceProcessor& sp) {
  std::vector<std::string> out(size_t(sp.GetPieceSize()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = sp.IdToPiece(int(i));
  return out;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::filesystem::path& path, std::unique_ptr<sentencepiece::SentencePieceProcessor> sp)
      : Tokenizer(path, pieces(*sp), id_or_none(sp->bos_id()), id_or_none(sp->eos_id()), "SentencePiece (library)"),
        sp_(std::move(sp)) {}

  std::vector<TokenId> encode(std::string_view text, bool add_bos) const override {
    std::vector<int> ids;
    auto status = sp_->Encode(text, &ids);
    require(status.ok(), path(), "encoding: " + status.ToString());
    if (add_bos) ids.insert(ids.begin(), required_bos());
    return ids;
  }

  std::string decode(std::span<const TokenId> ids) const override {
    check_ids(ids);
    std::string text;
    auto status = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &text);
    require(status.ok(), path(), "decoding: " + status.ToString());
    return text;
  }

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> open_sentencepiece(const std::filesystem::path& path) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  auto status = sp->Load(path.string());
  require(status.ok(), path, "not a GGUF file, a tokenizer.json or a SentencePiece model (" + status.ToString() + ")");
  return std::make_unique<SentencePieceTokenizer>(path, std::move(sp));
}

}  // namespace upcycle::tok

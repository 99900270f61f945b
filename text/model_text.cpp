#include "text/model_text.hpp"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/gguf_file.hpp"
#include "core/json_file.hpp"

namespace upcycle {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool is_gguf(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in && std::string_view(magic, 4) == "GGUF";
}

ModelTextInfo from_gguf(const fs::path& path) {
  const GgufFile file = GgufFile::open(path);
  const json& m = file.metadata();
  ModelTextInfo info;
  if (auto it = m.find("tokenizer.chat_template"); it != m.end()) {
    require(it->is_string(), path, "tokenizer.chat_template", "must be a string");
    info.chat_template = it->get<std::string>();
  }
  const auto flag = m.find("tokenizer.ggml.add_bos_token");
  const auto model = m.find("tokenizer.ggml.model");
  info.add_bos = flag != m.end() ? flag->is_boolean() && flag->get<bool>()
                                 : model != m.end() && model->is_string() && model->get<std::string>() == "llama";
  return info;
}

// tokenizer_config.json's chat_template: a string, or a list of {name, template} whose "default"
// entry is the one.
std::optional<std::string> config_template(const json& c, const fs::path& file) {
  const auto it = c.find("chat_template");
  if (it == c.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  require(it->is_array(), file, "chat_template", "must be a string or a list of {name, template}");
  for (const json& t : *it)
    if (t.is_object() && t.value("name", "") == "default" && t.contains("template") && t["template"].is_string())
      return t["template"].get<std::string>();
  return std::nullopt;
}

// A tokenizer.json post-processor (or one in a Sequence) whose single-text template starts with
// a special token: BOS goes first.
bool post_processor_adds_bos(const json& p) {
  if (!p.is_object()) return false;
  if (p.value("type", "") == "Sequence" && p.contains("processors") && p["processors"].is_array()) {
    for (const json& q : p["processors"])
      if (post_processor_adds_bos(q)) return true;
    return false;
  }
  const auto single = p.find("single");
  return p.value("type", "") == "TemplateProcessing" && single != p.end() && single->is_array() && !single->empty() &&
         (*single)[0].is_object() && (*single)[0].contains("SpecialToken");
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  require(bool(in), file, "cannot be read");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

ModelTextInfo from_folder(const fs::path& dir) {
  std::vector<fs::path> ggufs;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().extension() == ".gguf" && entry.is_regular_file()) ggufs.push_back(entry.path());
  const bool hf = fs::is_regular_file(dir / "tokenizer.json") || fs::is_regular_file(dir / "tokenizer.model");
  if (!hf && ggufs.size() == 1) return from_gguf(ggufs[0]);

  ModelTextInfo info;
  info.add_bos = fs::is_regular_file(dir / "tokenizer.model");
  if (fs::is_regular_file(dir / "tokenizer.json") && !info.add_bos) {
    const json t = read_json_file(dir / "tokenizer.json");
    info.add_bos = t.is_object() && t.contains("post_processor") && post_processor_adds_bos(t["post_processor"]);
  }
  const fs::path config = dir / "tokenizer_config.json";
  if (fs::is_regular_file(config)) {
    const json c = read_json_file(config);
    require(c.is_object(), config, "must be a JSON object");
    info.chat_template = config_template(c, config);
    if (auto it = c.find(kChosenTemplateKey); it != c.end()) {
      require(it->is_string(), config, kChosenTemplateKey, "must be a string");
      info.chosen_template = it->get<std::string>();
    }
    if (auto it = c.find("add_bos_token"); it != c.end() && it->is_boolean()) info.add_bos = it->get<bool>();
  }
  if (!info.chat_template && fs::is_regular_file(dir / "chat_template.jinja"))
    info.chat_template = read_text(dir / "chat_template.jinja");
  return info;
}

}  // namespace

ModelTextInfo read_model_text_info(const fs::path& path) {
  std::error_code ec;
  require(fs::exists(path, ec), path, "no such file or folder");
  if (fs::is_directory(path, ec)) return from_folder(path);
  if (is_gguf(path)) return from_gguf(path);
  return from_folder(path.parent_path().empty() ? fs::path(".") : path.parent_path());
}

}  // namespace upcycle

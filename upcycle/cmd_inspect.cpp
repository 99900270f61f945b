// `upcycle inspect PATH [--json]`: what a checkpoint (or an adapter folder) holds, for people and
// for scripts.
#include <cstdio>
#include <iostream>
#include <map>

#include <nlohmann/json.hpp>

#include "core/checkpoint.hpp"
#include "core/gguf_file.hpp"
#include "core/progress.hpp"
#include "formats/open_checkpoint.hpp"
#include "formats/peft_adapter.hpp"
#include "formats/safetensors.hpp"
#include "upcycle/cli.hpp"
#include "upcycle/commands.hpp"

namespace upcycle {

namespace {

using json = nlohmann::ordered_json;

// Parameters per stored dtype, and the dtype holding most of them.
std::map<std::string, uint64_t> params_by_dtype(const Checkpoint& ckpt) {
  std::map<std::string, uint64_t> by;
  for (const auto& t : ckpt.tensors()) by[std::string(dtype_name(t.stored_dtype()))] += *shape_elements(t.shape);
  return by;
}

std::string dominant(const std::map<std::string, uint64_t>& by) {
  std::string best;
  uint64_t n = 0;
  for (const auto& [name, count] : by)
    if (count > n) best = name, n = count;
  return best;
}

json summary(const Checkpoint& ckpt) {
  const ModelConfig& c = ckpt.config();
  auto by = params_by_dtype(ckpt);
  json j;
  j["path"] = ckpt.path().string();
  j["format"] = std::string(ckpt.format());
  j["model_type"] = c.model_type;
  j["params"] = ckpt.parameter_count();
  j["tensors"] = ckpt.tensors().size();
  j["dtype"] = dominant(by);
  j["dtypes"] = by;
  j["experts"] = c.num_local_experts;
  j["experts_per_token"] = c.num_experts_per_tok;
  if (c.is_moe()) {
    j["expert_intermediate_size"] = c.expert_intermediate_size();
    j["norm_topk_prob"] = c.norm_topk_prob;
  }
  if (c.has_shared_expert()) j["shared_expert_intermediate_size"] = c.shared_expert_intermediate_size;
  j["layers"] = c.num_hidden_layers;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["attention_heads"] = c.num_attention_heads;
  j["kv_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["rope_theta"] = c.rope_theta;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["bytes"] = ckpt.stored_bytes();
  return j;
}

// A GGUF with no tensors holds a tokenizer only.
json tokenizer_summary(const GgufFile& f) {
  const auto& m = f.metadata();
  auto str = [&](const char* key) { return m.contains(key) && m[key].is_string() ? m[key].get<std::string>() : ""; };
  json j;
  j["path"] = f.path().string();
  j["format"] = "gguf";
  j["gguf_version"] = f.version();
  j["model_type"] = nullptr;
  j["params"] = 0;
  j["tensors"] = 0;
  j["bytes"] = 0;
  j["architecture"] = str("general.architecture");
  j["tokenizer"] = {{"model", str("tokenizer.ggml.model")},
                    {"pre", str("tokenizer.ggml.pre")},
                    {"tokens", m.contains("tokenizer.ggml.tokens") ? m["tokenizer.ggml.tokens"].size() : 0}};
  return j;
}

// A PEFT LoRA or MixLoRA adapter folder: its settings and tensors (checked against no base).
json adapter_summary(const std::filesystem::path& dir) {
  const LoraConfig c = read_lora_config(dir);
  const SafetensorsFile st = SafetensorsFile::open(adapter_weights_file(dir));
  std::map<std::string, uint64_t> by;
  uint64_t params = 0;
  for (const SafetensorsEntry& e : st.entries()) {
    by[std::string(dtype_name(e.info.dtype))] += *shape_elements(e.info.shape);
    params += *shape_elements(e.info.shape);
  }
  json j;
  j["path"] = dir.string();
  j["format"] = c.is_moe() ? "mixlora adapter" : "peft lora adapter";
  j["base_model"] = c.base_model;
  j["rank"] = c.rank;
  j["alpha"] = c.alpha;
  j["scaling"] = c.scaling();
  j["use_rslora"] = c.use_rslora;
  j["dropout"] = c.dropout;
  j["target_modules"] = c.target_modules;
  j["experts"] = c.experts;
  j["experts_per_token"] = c.top_k;
  j["params"] = params;
  j["tensors"] = st.entries().size();
  j["dtype"] = dominant(by);
  j["dtypes"] = by;
  j["bytes"] = std::filesystem::file_size(adapter_weights_file(dir));
  return j;
}

void print_line(const char* key, const std::string& value) { std::printf("%-18s %s\n", key, value.c_str()); }
std::string num(const json& v) { return v.is_null() ? std::string("-") : v.dump(); }

void print_dtypes(const json& j) {
  std::string dtypes;
  for (const auto& [name, count] : j["dtypes"].items()) dtypes += (dtypes.empty() ? "" : ", ") + name + " " + count.dump();
  print_line("dtype", j["dtype"].get<std::string>() + " (parameters by dtype: " + dtypes + ")");
}

void print_adapter(const json& j) {
  std::string targets;
  for (const auto& t : j["target_modules"]) targets += (targets.empty() ? "" : ",") + t.get<std::string>();
  print_line("base_model", j["base_model"].get<std::string>().empty() ? "-" : j["base_model"].get<std::string>());
  print_line("rank", num(j["rank"]) + " (alpha " + num(j["alpha"]) + ", scaling " + num(j["scaling"]) +
                         (j["use_rslora"].get<bool>() ? ", rsLoRA" : "") + ")");
  print_line("targets", targets);
  print_line("dropout", num(j["dropout"]));
  print_line("experts", j["experts"].get<int64_t>() == 0
                            ? std::string("0 (a plain LoRA)")
                            : num(j["experts"]) + " (top-" + num(j["experts_per_token"]) +
                                  "; the FFN targets each expert's, the others shared)");
  print_line("parameters", num(j["params"]));
  print_line("tensors", num(j["tensors"]));
  print_dtypes(j);
  print_line("bytes", format_bytes(j["bytes"].get<double>()));
}

void print_readable(const json& j) {
  auto line = print_line;
  line("path", j["path"].get<std::string>());
  line("format", j["format"].get<std::string>());
  if (j.contains("rank")) return print_adapter(j);
  if (j.contains("tokenizer")) {
    const auto& t = j["tokenizer"];
    line("contents", "tokenizer only (no tensors)");
    line("tokenizer", t["model"].get<std::string>() + " (pre-tokenizer " + t["pre"].get<std::string>() + "), " +
                          num(t["tokens"]) + " tokens");
    return;
  }
  line("model_type", j["model_type"].get<std::string>());
  line("layers", num(j["layers"]));
  line("hidden_size", num(j["hidden_size"]));
  line("intermediate_size", num(j["intermediate_size"]));
  line("attention heads", num(j["attention_heads"]) + " (kv " + num(j["kv_heads"]) + ", head_dim " +
                              num(j["head_dim"]) + ")");
  line("vocab_size", num(j["vocab_size"]));
  line("tied embeddings", j["tie_word_embeddings"].get<bool>() ? "yes" : "no");
  line("rope_theta", num(j["rope_theta"]));
  line("experts", j["experts"].get<int64_t>() == 0
                      ? std::string("0 (dense)")
                      : num(j["experts"]) + " (top-" + num(j["experts_per_token"]) + ", " +
                            (j["norm_topk_prob"].get<bool>() ? "renormalised" : "not renormalised") + "; width " +
                            num(j["expert_intermediate_size"]) + ")");
  if (j.contains("shared_expert_intermediate_size"))
    line("shared expert", "width " + num(j["shared_expert_intermediate_size"]) + ", sigmoid-gated");
  line("parameters", num(j["params"]));
  line("tensors", num(j["tensors"]));
  print_dtypes(j);
  line("bytes", format_bytes(j["bytes"].get<double>()));
}

}  // namespace

int cmd_inspect(const Args& args) {
  cli::Spec spec;
  spec.usage = "upcycle inspect PATH [--json]";
  spec.summary =
      "Summarises a checkpoint: a Hugging Face folder (safetensors, sharded or not), an HDF5 file (.h5)\n"
      "or a GGUF file (.gguf, also tokenizer-only ones); or a PEFT LoRA or MixLoRA adapter folder (its\n"
      "settings and tensors; checked against its base by the commands that apply it). Validates it on\n"
      "the way: a malformed file is reported with what is wrong and exit code 2.";
  spec.options.add_options()("json", "print one JSON object (keys: model_type, params, tensors, dtype, experts, "
                                     "layers, hidden_size, vocab_size, bytes, ...)");
  spec.hidden.add_options()("path", cli::po::value<std::string>()->required(), "checkpoint");
  spec.positional.add("path", 1);
  auto vm = cli::parse(spec, args);
  if (!vm) return 0;
  std::filesystem::path path = (*vm)["path"].as<std::string>();

  json j;
  if (std::filesystem::is_directory(path) && is_peft_adapter_folder(path)) j = adapter_summary(path);
  if (path.extension() == ".gguf" && std::filesystem::is_regular_file(path)) {
    GgufFile f = GgufFile::open(path);
    if (f.tensors().empty()) j = tokenizer_summary(f);
  }
  if (j.is_null()) j = summary(*open_checkpoint(path));
  if (vm->count("json")) std::cout << j.dump(2) << "\n";
  else print_readable(j);
  return 0;
}

}  // namespace upcycle

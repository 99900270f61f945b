// `upcycle run`: the whole pipeline from one config on tiny models, skipping finished stages and
// resuming an interrupted one.
#include <doctest/doctest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::test;
using json = nlohmann::json;

TEST_CASE("run: dense tuning, conversion of its checkpoints, MoE tuning, evaluation, resumable") {
  ScratchDir dir;
  const fs::path model = write_chat_model(dir.path(), "llama", 21);
  {
    std::ofstream data(dir / "qa.jsonl");
    for (int i = 0; i < 24; ++i)
      data << json{{"instruction", "say " + std::to_string(i % 6)}, {"output", std::string(size_t(1 + i % 3), char('a' + i % 6))},
                   {"task", i % 2 ? "odd" : "even"}}.dump() << "\n";
  }
  const std::string data = (dir / "qa.jsonl").string();
  json config = {
      {"out", (dir / "run").string()},
      {"seed", 3},
      {"dense", {{"model", model.string()}, {"data", data}, {"steps", 8}, {"save_every", 2}, {"lr", 1e-2}, {"seq_len", 128},
                 {"batch_tokens", 256}}},
      {"convert", {{"experts", 5}, {"top_k", 2}, {"candidates", 2}, {"seed_min", 6}, {"router_epochs", 2}, {"seq_len", 128}}},
      {"moe", {{"steps", 6}, {"save_every", 2}, {"stop_at", 4}, {"lr", 1e-2}, {"seq_len", 128}, {"batch_tokens", 256}}},
      {"eval", json::array({{{"data", data}}, {{"data", data}, {"metric", "exact"}, {"max_new_tokens", 6}}})}};
  write_file(dir / "run.json", config.dump());
  auto r = run_upcycle("run " + (dir / "run.json").string());
  REQUIRE_MESSAGE(r.code == 0, r.err);
  // The dense run's 4 checkpoints (steps 2, 4, 6 and final) became the first experts.
  const auto report = json::parse(read_file(dir / "run" / "moe-init" / "upcycle_convert.json"));
  REQUIRE(report["pool"].size() == 5);
  CHECK(report["pool"][3]["checkpoint"] == 3);
  CHECK(report["pool"][4].contains("parents"));
  CHECK(fs::exists(dir / "run" / "moe" / "step-000004"));
  CHECK_FALSE(fs::exists(dir / "run" / "moe" / "final"));  // stopped at step 4
  CHECK_FALSE(fs::exists(dir / "run" / "run.json"));

  // Again without stop_at: dense and convert are skipped, the MoE resumes from step 4.
  config["moe"].erase("stop_at");
  write_file(dir / "run.json", config.dump());
  r = run_upcycle("run " + (dir / "run.json").string());
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("dense: " + (dir / "run" / "dense" / "final").string() + " is done, skipped") != std::string::npos);
  CHECK(r.err.find("stage 2/4 convert: " + (dir / "run" / "moe-init").string() + " is done, skipped") != std::string::npos);
  CHECK(r.err.find("moe: resuming from " + (dir / "run" / "moe" / "step-000004").string()) != std::string::npos);
  const auto summary = json::parse(read_file(dir / "run" / "run.json"));
  CHECK(summary["eval"].size() == 4);
  CHECK(summary["eval"]["moe-0-loss"]["tokens"].get<int64_t>() > 0);
  CHECK(summary["eval"]["dense-1-exact"]["total"] == 24);

  // A bad key is named.
  config["moe"]["learning_rate"] = 1;
  write_file(dir / "bad.json", json{{"out", (dir / "bad").string()}, {"dense", config["dense"]}, {"convert", config["convert"]},
                                    {"moe", config["moe"]}, {"typo", 1}}.dump());
  r = run_upcycle("run " + (dir / "bad.json").string());
  CHECK(r.code == 2);
  CHECK(r.err.find("typo: is not a key of the pipeline") != std::string::npos);

  // Every stage's options are read and checked before the first stage runs: a mistake in a late
  // stage is named by stage and key, and nothing is made.
  auto refused = [&](json bad, const std::string& message) {
    write_file(dir / "bad.json", bad.dump());
    const auto result = run_upcycle("run " + (dir / "bad.json").string());
    CHECK_MESSAGE(result.code == 1, result.err);
    CHECK_MESSAGE(result.err.find(message) != std::string::npos, result.err);
    CHECK_FALSE(fs::exists(dir / "bad"));
  };
  json bad = {{"out", (dir / "bad").string()}, {"dense", config["dense"]}, {"convert", config["convert"]}, {"moe", config["moe"]}};
  refused(bad, "bad.json: stage moe: learning_rate is not an option of this stage");
  bad["moe"].erase("learning_rate");
  bad["convert"]["top_k"] = 6;
  refused(bad, "bad.json: stage convert: top_k must lie in [1, experts] (5)");
  bad["convert"]["top_k"] = 2;
  bad["convert"]["search_sample"] = -1;
  refused(bad, "bad.json: stage convert: search_sample must be a non-negative integer");
  bad["convert"].erase("search_sample");
  bad["eval"] = json::array({{{"data", data}, {"metric", "bleu"}}});
  refused(bad, "bad.json: stage eval[0]: metric: 'bleu' is not loss, exact, choice or routing");
}

TEST_CASE("run: experts_kind lora trains adapters, converts them into a LoRA-MoE and evaluates both on the model") {
  ScratchDir dir;
  const fs::path model = write_chat_model(dir.path(), "llama", 22);
  {
    std::ofstream data(dir / "qa.jsonl");
    for (int i = 0; i < 24; ++i)
      data << json{{"instruction", "say " + std::to_string(i % 6)}, {"output", std::string(size_t(1 + i % 3), char('a' + i % 6))}}.dump()
           << "\n";
  }
  const std::string data = (dir / "qa.jsonl").string();
  json config = {
      {"out", (dir / "run").string()},
      {"seed", 3},
      {"experts_kind", "lora"},
      {"dense", {{"model", model.string()}, {"data", data}, {"steps", 6}, {"save_count", 3}, {"lora_rank", 4}, {"lr", 1e-2},
                 {"seq_len", 128}, {"batch_tokens", 256}}},
      {"convert", {{"experts", 4}, {"top_k", 2}, {"candidates", 2}, {"seed_min", 6}, {"router_epochs", 1}, {"seq_len", 128}}},
      {"moe", {{"steps", 2}, {"lr", 1e-2}, {"seq_len", 128}, {"batch_tokens", 256}}},
      {"eval", json::array({{{"data", data}}})}};
  write_file(dir / "run.json", config.dump());
  auto r = run_upcycle("run " + (dir / "run.json").string());
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(fs::exists(dir / "run" / "dense" / "final" / "adapter_config.json"));
  const auto report = json::parse(read_file(dir / "run" / "moe-init" / "upcycle_convert.json"));
  CHECK(report["adapters"].size() == 3);
  CHECK(report["pool"].size() == 4);
  CHECK(json::parse(read_file(dir / "run" / "moe" / "final" / "adapter_config.json"))["num_experts"] == 4);
  const auto summary = json::parse(read_file(dir / "run" / "run.json"));
  CHECK(summary["eval"]["dense-0-loss"]["loss"] != summary["eval"]["moe-0-loss"]["loss"]);

  // The kind and the dense run must agree.
  config["out"] = (dir / "bad").string();
  config["dense"].erase("lora_rank");
  config["experts_kind"] = "ffn";
  config["dense"]["lora_rank"] = 4;
  write_file(dir / "bad.json", config.dump());
  r = run_upcycle("run " + (dir / "bad.json").string());
  CHECK(r.code != 0);
  CHECK_MESSAGE(r.err.find("\"experts_kind\": \"lora\"") != std::string::npos, r.err);
  CHECK_FALSE(fs::exists(dir / "bad"));
}

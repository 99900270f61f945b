// `upcycle demo` and `upcycle sweep` at toy scale: every stage runs, the report, CSV and plots
// are written with the numbers of the runs' own evaluations, and a second run redoes nothing.
#include <doctest/doctest.h>

#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::test;
using json = nlohmann::json;

namespace {

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// A well-formed SVG document (python's XML parser, as a browser would read it).
bool valid_svg(const fs::path& file) {
  const std::string cmd = "python3 -c \"import sys, xml.dom.minidom as m; d = m.parse(sys.argv[1]); "
                          "sys.exit(d.documentElement.tagName != 'svg')\" '" + file.string() + "'";
  return std::system(cmd.c_str()) == 0;
}

}  // namespace

TEST_CASE("demo: data, a dense run with checkpoints, three methods, evaluations and a report, rerun skips all") {
  ScratchDir dir;
  const fs::path out = dir / "demo";
  const std::string args = "demo --out '" + out.string() +
                           "' --base-steps 4 --dense-steps 6 --checkpoints 3 --steps 3 --train-samples 120 --test-samples 10 "
                           "--batch-tokens 512 --experts 4 --seed-samples 12 --repeats 2";
  auto r = run_upcycle(args);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  // Two repeats share the data and the base tuning; each has its own dense run, which saved its
  // checkpoints evenly (--save-count): steps 2 and 4, then final.
  CHECK(fs::exists(out / "init" / "tokenizer.json"));
  CHECK(fs::exists(out / "base" / "final"));
  for (const char* repeat : {"r0", "r1"})
    for (const char* d : {"step-000002", "step-000004", "final"}) CHECK(fs::exists(out / repeat / "dense-run" / d));
  const auto convert = json::parse(read_file(out / "r0" / "upit" / "init" / "upcycle_convert.json"));
  CHECK(convert["pool"].size() == 4);
  CHECK(convert["distances_before"].size() == 3);
  // Seeds differ between repeats: the dense runs' data order differs.
  CHECK(read_file(out / "r0" / "dense-run" / "metrics.jsonl") != read_file(out / "r1" / "dense-run" / "metrics.jsonl"));

  const auto csv = lines(read_file(out / "metrics.csv"));
  REQUIRE(csv.size() == 7);  // header, then 2 repeats x 3 methods
  CHECK(csv[0].rfind("data,repeat,seed,method,experts,total_params,active_params,start_loss,eval_loss,eval_ppl,exact,seconds,"
                     "exact_heldout_phrasings,exact_heldout_tasks,", 0) == 0);
  const double heldout = json::parse(read_file(out / "r1" / "sparse" / "eval-heldout-tasks.json"))["acc"];
  CHECK(csv[5].rfind("120,1,1,sparse,4,", 0) == 0);
  CHECK(csv[5].find(fmt::format(",{:.6f},", heldout)) != std::string::npos);
  CHECK(csv[1].rfind("120,0,0,dense,1,", 0) == 0);
  CHECK(csv[3].rfind("120,0,0,upit,4,", 0) == 0);
  // Sparse upcycling's copies of the final FFN compute the dense run's final model exactly: the
  // same loss before tuning.
  const double dense_start = json::parse(read_file(out / "r0" / "dense" / "eval-start-loss.json"))["loss"];
  const double sparse_start = json::parse(read_file(out / "r0" / "sparse" / "eval-start-loss.json"))["loss"];
  CHECK(sparse_start == doctest::Approx(dense_start).epsilon(1e-5));
  CHECK(fs::exists(out / "r0" / "upit" / "eval-start-loss.json"));
  // The table's loss is the methods' own evaluations, mean over the repeats.
  const double upit_loss = (json::parse(read_file(out / "r0" / "upit" / "eval-loss.json"))["loss"].get<double>() +
                            json::parse(read_file(out / "r1" / "upit" / "eval-loss.json"))["loss"].get<double>()) / 2;
  const std::string report = read_file(out / "report.md");
  CHECK(report.find("| upit | 4 |") != std::string::npos);
  CHECK(report.find(fmt::format("{:.4f} [", upit_loss)) != std::string::npos);
  CHECK(report.find("## Results (2 repeats; mean [95% CI over repeats])") != std::string::npos);
  // Pairs of methods from paired t intervals over the repeats, never the paper's shape from means.
  CHECK(report.find("upit E=4 − sparse E=4: ") != std::string::npos);
  CHECK(report.find("2 repeats, p = ") != std::string::npos);
  CHECK(report.find("Test loss before each method's tuning") != std::string::npos);
  CHECK(report.find("paper's shape") == std::string::npos);
  CHECK(lines(read_file(out / "pairs.csv")).size() == 1 + 2 * 3);  // exact and loss for 3 pairs
  CHECK(lines(read_file(out / "summary.csv")).size() == 1 + 2 * 3);
  for (const char* plot : {"loss.svg", "expert_load.svg", "distances.svg", "routing-sparse.svg", "routing-upit.svg"})
    CHECK_MESSAGE(valid_svg(out / "plots" / plot), plot);
  CHECK(report.find("UpIT's experts, measured") != std::string::npos);
  // Routing telemetry per layer in every MoE tuning's metrics.
  CHECK(read_file(out / "r0" / "upit" / "tuned" / "metrics.jsonl").find("\"router_entropy\"") != std::string::npos);

  // Everything exists: the rerun trains nothing and writes the same table.
  const auto tuned = fs::last_write_time(out / "r1" / "upit" / "tuned" / "final" / "model.safetensors");
  r = run_upcycle(args);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(fs::last_write_time(out / "r1" / "upit" / "tuned" / "final" / "model.safetensors") == tuned);
  CHECK(r.err.find("is done, skipped") != std::string::npos);
  CHECK(lines(read_file(out / "metrics.csv")) == csv);

  for (const char* bad : {"--experts 0", "--top-k 3 --experts 2", "--steps 0", "--checkpoints 9 --dense-steps 4", "--repeats 0"}) {
    r = run_upcycle("demo --out '" + (dir / "bad").string() + "' " + bad);
    CHECK_MESSAGE(r.code == 1, bad);
    CHECK_MESSAGE(!fs::exists(dir / "bad" / "data"), bad);  // refused before any work
  }
}

TEST_CASE("sweep: a grid of data sizes and methods, sweep.csv and plots, misuse is named") {
  ScratchDir dir;
  const fs::path out = dir / "sweep";
  const std::string args = "sweep --out '" + out.string() +
                           "' --experts 2 --data 40,80 --methods dense,upit,upit-no-router --test-samples 6 --base-steps 3 --base-samples 20 --dense-epochs 1 "
                           "--checkpoints 2 --epochs 0.5 --batch-tokens 512 --seed-samples 8";
  auto r = run_upcycle(args);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto csv = lines(read_file(out / "sweep.csv"));
  REQUIRE(csv.size() == 7);  // header, then 2 sizes x (dense, upit E=2, upit-no-router E=2)
  CHECK(fs::exists(out / "base-r0" / "final"));  // one base tuning, shared by every cell
  CHECK(csv[1].rfind("40,0,0,dense,1,", 0) == 0);
  CHECK(csv[2].rfind("40,0,0,upit,2,", 0) == 0);
  CHECK(csv[5].rfind("80,0,0,upit,2,", 0) == 0);
  // The ablation by name: UpIT's pool with a random router.
  const auto ablation = json::parse(read_file(out / "n40-r0" / "e2" / "upit-no-router" / "init" / "upcycle_convert.json"));
  CHECK(ablation["router"] == "random");
  CHECK(ablation["method"] == "upit");
  CHECK(read_file(out / "report.md").find("upit E=2 − upit-no-router E=2") != std::string::npos);
  // More data, more steps: tuning is by epochs.
  CHECK(lines(read_file(out / "n80-r0" / "dense-run" / "metrics.jsonl")).size() >
        lines(read_file(out / "n40-r0" / "dense-run" / "metrics.jsonl")).size());
  for (const char* plot : {"exact.svg", "loss.svg"}) CHECK_MESSAGE(valid_svg(out / "plots" / plot), plot);
  CHECK(read_file(out / "report.md").find("| upit E=2 |") != std::string::npos);
  // A rerun finds every cell done.
  r = run_upcycle(args);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("saved") == std::string::npos);
  CHECK(lines(read_file(out / "sweep.csv")) == csv);

  for (const char* bad : {"--experts 0", "--experts 2,x", "--data ''", "--methods dense,moe", "--repeats 0",
                          "--experts 1,4 --top-k 2"}) {
    r = run_upcycle("sweep --out '" + (dir / "bad").string() + "' " + bad);
    CHECK_MESSAGE(r.code == 1, bad);
    CHECK_MESSAGE(r.err.find("--") != std::string::npos, r.err);
  }
}

TEST_CASE("demo --experts-kind lora: the dense run trains adapters and every MoE is a LoRA-MoE of them") {
  ScratchDir dir;
  const fs::path out = dir / "demo";
  const std::string args = "demo --out '" + out.string() +
                           "' --experts-kind lora --lora-rank 4 --base-steps 3 --dense-steps 6 --checkpoints 3 --steps 3 "
                           "--train-samples 120 --test-samples 10 --batch-tokens 512 --experts 4 --seed-samples 12 "
                           "--repeats 1 --methods dense,sparse,upit,scratch";
  auto r = run_upcycle(args);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  // The base tuning trains the model; the dense run an adapter on it, which is all it writes.
  CHECK(fs::exists(out / "base" / "final" / "model.safetensors"));
  for (const char* d : {"step-000002", "step-000004", "final"}) {
    CHECK(fs::exists(out / "r0" / "dense-run" / d / "adapter_config.json"));
    CHECK_FALSE(fs::exists(out / "r0" / "dense-run" / d / "model.safetensors"));
  }
  const auto convert = json::parse(read_file(out / "r0" / "upit" / "init" / "upcycle_convert.json"));
  CHECK(convert["pool"].size() == 4);
  CHECK(convert["adapters"].size() == 3);
  CHECK(convert["router_steps"].get<int>() > 0);
  CHECK(json::parse(read_file(out / "r0" / "scratch" / "init" / "adapter_config.json"))["peft_type"] == "MIXLORA");
  CHECK(fs::exists(out / "r0" / "upit" / "tuned" / "final" / "adapter_model.safetensors"));
  // Sparse copies of the final adapter compute the dense LoRA model: the same loss before tuning.
  const double dense_start = json::parse(read_file(out / "r0" / "dense" / "eval-start-loss.json"))["loss"];
  const double sparse_start = json::parse(read_file(out / "r0" / "sparse" / "eval-start-loss.json"))["loss"];
  CHECK(sparse_start == doctest::Approx(dense_start).epsilon(1e-5));
  CHECK(fs::exists(out / "r0" / "upit" / "eval-routing.json"));
  const auto csv = lines(read_file(out / "metrics.csv"));
  REQUIRE(csv.size() == 5);
  CHECK(csv[4].rfind("120,0,0,scratch,4,", 0) == 0);
  CHECK(read_file(out / "report.md").find("LoRA experts") != std::string::npos);

  // Methods that the kind of experts lacks, and kinds that do not exist, are refused up front.
  for (const char* bad : {"--experts-kind lora --methods dense,drop", "--methods dense,scratch", "--experts-kind moe",
                          "--experts-kind lora --lora-rank 0"}) {
    r = run_upcycle("demo --out '" + (dir / "bad").string() + "' " + bad);
    CHECK_MESSAGE(r.code == 1, bad);
    CHECK_MESSAGE(!fs::exists(dir / "bad" / "data"), bad);
  }
}

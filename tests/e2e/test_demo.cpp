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
                           "--batch-tokens 512 --experts 4 --seed-samples 12";
  auto r = run_upcycle(args);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  // The dense run saved its checkpoints evenly (--save-count): steps 2 and 4, then final.
  for (const char* d : {"step-000002", "step-000004", "final"}) CHECK(fs::exists(out / "dense-run" / d));
  CHECK(fs::exists(out / "init" / "tokenizer.json"));
  CHECK(fs::exists(out / "base" / "final"));
  const auto convert = json::parse(read_file(out / "upit" / "init" / "upcycle_convert.json"));
  CHECK(convert["pool"].size() == 4);
  CHECK(convert["distances_before"].size() == 3);

  const auto csv = lines(read_file(out / "metrics.csv"));
  REQUIRE(csv.size() == 4);
  CHECK(csv[0].rfind("method,experts,total_params,active_params,eval_loss,eval_ppl,exact,seconds,"
                     "exact_heldout_phrasings,exact_heldout_tasks,", 0) == 0);
  const double heldout = json::parse(read_file(out / "sparse" / "eval-heldout-tasks.json"))["acc"];
  CHECK(csv[2].find(fmt::format(",{:.6f},", heldout)) != std::string::npos);
  CHECK(csv[1].rfind("dense,1,", 0) == 0);
  CHECK(csv[3].rfind("upit,4,", 0) == 0);
  // The table's loss is the method's own evaluation.
  const double upit_loss = json::parse(read_file(out / "upit" / "eval-loss.json"))["loss"];
  const std::string report = read_file(out / "report.md");
  CHECK(report.find("| upit | 4 |") != std::string::npos);
  CHECK(report.find(fmt::format("{:.4f}", upit_loss)) != std::string::npos);
  CHECK(report.find("## What the table shows") != std::string::npos);
  // Pairs of methods from a paired bootstrap over the test samples, never the paper's shape from means.
  CHECK(report.find("upit − sparse: ") != std::string::npos);
  CHECK(report.find("by a paired bootstrap over the") != std::string::npos);
  CHECK(report.find("paper's shape") == std::string::npos);
  for (const char* plot : {"loss.svg", "expert_load.svg", "distances.svg"}) CHECK_MESSAGE(valid_svg(out / "plots" / plot), plot);

  // Everything exists: the rerun trains nothing and writes the same table.
  const auto tuned = fs::last_write_time(out / "upit" / "tuned" / "final" / "model.safetensors");
  r = run_upcycle(args);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(fs::last_write_time(out / "upit" / "tuned" / "final" / "model.safetensors") == tuned);
  CHECK(r.err.find("is done, skipped") != std::string::npos);
  CHECK(lines(read_file(out / "metrics.csv")) == csv);

  for (const char* bad : {"--experts 0", "--top-k 3 --experts 2", "--steps 0", "--checkpoints 9 --dense-steps 4"}) {
    r = run_upcycle("demo --out '" + (dir / "bad").string() + "' " + bad);
    CHECK_MESSAGE(r.code == 1, bad);
    CHECK_MESSAGE(!fs::exists(dir / "bad" / "data"), bad);  // refused before any work
  }
}

TEST_CASE("sweep: a grid of data sizes and methods, sweep.csv and plots, misuse is named") {
  ScratchDir dir;
  const fs::path out = dir / "sweep";
  const std::string args = "sweep --out '" + out.string() +
                           "' --experts 2 --data 40,80 --methods dense,upit --test-samples 6 --base-steps 3 --base-samples 20 --dense-epochs 1 "
                           "--checkpoints 2 --epochs 0.5 --batch-tokens 512 --seed-samples 8";
  auto r = run_upcycle(args);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const auto csv = lines(read_file(out / "sweep.csv"));
  REQUIRE(csv.size() == 5);  // header, then 2 sizes x (dense, upit E=2)
  CHECK(fs::exists(out / "base-r0" / "final"));  // one base tuning, shared by every cell
  CHECK(csv[1].rfind("40,0,dense,1,", 0) == 0);
  CHECK(csv[2].rfind("40,0,upit,2,", 0) == 0);
  CHECK(csv[4].rfind("80,0,upit,2,", 0) == 0);
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

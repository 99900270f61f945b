// `upcycle demo` and `upcycle sweep` at toy scale: every stage runs, the report, CSV and plots
// are written with the numbers of the runs' own evaluations, and a second run redoes nothing.
#include <doctest/doctest.h>

#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "experiments/sweep.hpp"
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

// sweep.csv without its seconds column: the wall times of processes that ran at once differ.
std::vector<std::string> rows_but_seconds(const fs::path& csv) {
  std::vector<std::string> out;
  for (const std::string& line : lines(read_file(csv))) {
    std::stringstream in(line);
    std::string row;
    int column = 0;
    for (std::string field; std::getline(in, field, ','); ++column)
      if (column != 11) row += field + ",";  // data,repeat,seed,method,experts,...,exact,seconds
    out.push_back(row);
  }
  return out;
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
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

TEST_CASE("sweep: the plan's cells are the grid's, those that make the shared stages first, each with its row") {
  SweepOptions o;
  o.data = {40, 80};
  o.methods = {"upit", "dense", "upit-no-router"};
  o.experts = {2, 4};
  o.repeats = 2;
  const std::vector<SweepCell> cells = sweep_cells(o);
  REQUIRE(cells.size() == 2 * 2 * (1 + 2 * 2));
  CHECK(sweep_first_cells(o) == 4);
  std::vector<std::string> names;
  std::set<size_t> rows;
  for (const SweepCell& c : cells) names.push_back(cell_name(c)), rows.insert(c.row);
  CHECK(rows.size() == cells.size());
  CHECK(*rows.rbegin() == cells.size() - 1);
  // First each data size and repeat's dense cell, repeats side by side (their base tunings run at
  // once), then the rest in the grid's order.
  CHECK(names[0] == "40 samples, repeat 0, dense");
  CHECK(names[1] == "40 samples, repeat 1, dense");
  CHECK(names[3] == "80 samples, repeat 1, dense");
  CHECK(names[4] == "40 samples, repeat 0, upit with 2 experts");
  CHECK(names[5] == "40 samples, repeat 0, upit with 4 experts");
  CHECK(names[6] == "40 samples, repeat 0, upit-no-router with 2 experts");
  CHECK(cells[0].row == 2);  // upit E=2, upit E=4, then dense in the grid (sweep.csv's order)
  CHECK(cells[4].row == 0);
  // Without dense, each data size and repeat's first method at the first expert count comes first.
  o.methods = {"upit", "upit-no-router"};
  CHECK(cell_name(sweep_cells(o)[1]) == "40 samples, repeat 1, upit with 2 experts");
}

TEST_CASE("sweep: --plan's cells run by two processes at once into one folder, then --report, give the serial sweep's rows") {
  ScratchDir dir;
  const std::string grid = "--experts 2 --data 40,80 --methods dense,upit,upit-no-router --test-samples 6 --base-steps 3 "
                           "--base-samples 20 --dense-epochs 1 --checkpoints 2 --epochs 0.5 --batch-tokens 512 --seed-samples 8";
  const fs::path serial = dir / "serial", shared = dir / "shared";
  auto r = run_upcycle("sweep --out " + q(serial) + " " + grid);
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(fs::exists(serial / "n80-r0" / "e2" / "upit" / "sweep_row.json"));  // the serial sweep writes each cell's row too

  r = run_upcycle("sweep --out " + q(shared) + " " + grid + " --plan");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  const std::string plan = r.out;
  const auto plan_lines = lines(plan);
  REQUIRE(plan_lines.size() == 6);  // 2 sizes x (dense, upit E=2, upit-no-router E=2)
  for (size_t i = 0; i < plan_lines.size(); ++i) {
    CHECK(plan_lines[i].ends_with(fmt::format(" sweep --experts=2 --data=40,80 --methods=dense,upit,upit-no-router --out={} "
                                              "--base-samples=20 --dense-epochs=1 --epochs=0.5 --test-samples=6 --base-steps=3 "
                                              "--checkpoints=2 --batch-tokens=512 --seed-samples=8 --cell {}",
                                              shared.string(), i)));
  }
  CHECK(r.err.find("--report") != std::string::npos);  // the line that gathers them
  CHECK(!fs::exists(shared));                           // planning makes nothing
  // The same options in another order and spelling give the same plan.
  r = run_upcycle("sweep --seed-samples 8 --batch-tokens 512 --epochs 0.5 --checkpoints 2 --dense-epochs 1 --base-samples 20 "
                  "--base-steps 3 --test-samples 6 --methods dense,upit,upit-no-router --data 40,80 --experts 2 --out '" +
                  shared.string() + "/' --plan");
  CHECK(r.out == plan);

  // Two processes run every line, one from the first and one from the last, so that they meet on
  // the shared stages and on a cell: each cell runs once, the other process waiting for it. One
  // thread each, as on a 2-core machine's job array.
  write_file(dir / "plan.sh", plan);
  const std::string both = "export OMP_NUM_THREADS=1; sh -e " + q(dir / "plan.sh") + " >" + q(dir / "a.log") +
                           " 2>&1 & a=$!; tac " + q(dir / "plan.sh") + " | sh -e >" + q(dir / "b.log") +
                           " 2>&1 & b=$!; wait $a; ra=$?; wait $b; rb=$?; [ $ra = 0 ] && [ $rb = 0 ]";
  const int status = std::system(both.c_str());
  const std::string logs = read_file(dir / "a.log") + read_file(dir / "b.log");
  REQUIRE_MESSAGE(status == 0, logs);
  CHECK(count(logs, "running cell ") == 6);
  CHECK(count(logs, "wrote a random") == 1);  // the shared initial model, made once
  r = run_upcycle("sweep --out " + q(shared) + " " + grid + " --report");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(r.err.find("not done") == std::string::npos);
  CHECK(rows_but_seconds(shared / "sweep.csv") == rows_but_seconds(serial / "sweep.csv"));
  CHECK(read_file(shared / "report.md").find("All 6 cells of the grid are in this report.") != std::string::npos);

  // A cell missing: the report holds the others and names it; --cell runs it again.
  fs::remove(shared / "n80-r0" / "e2" / "upit" / "sweep_row.json");
  r = run_upcycle("sweep --out " + q(shared) + " " + grid + " --report");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK_MESSAGE(r.err.find("1 of 6 cells are not done, so not in the report: cell 4 (80 samples, repeat 0, upit with 2 experts)") !=
                    std::string::npos, r.err);
  CHECK(lines(read_file(shared / "sweep.csv")).size() == 1 + 5);
  CHECK(read_file(shared / "report.md").find("5 of the grid's 6 cells are in this report; missing (not finished): cell 4 (80 "
                                             "samples, repeat 0, upit with 2 experts).") != std::string::npos);
  r = run_upcycle("sweep --out " + q(shared) + " " + grid + " --cell 4");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  r = run_upcycle("sweep --out " + q(shared) + " " + grid + " --report");
  REQUIRE_MESSAGE(r.code == 0, r.err);
  CHECK(rows_but_seconds(shared / "sweep.csv") == rows_but_seconds(serial / "sweep.csv"));

  // Misuse: an index outside the grid (exit 2, naming the range), two modes at once (exit 1).
  for (const char* index : {"6", "=-1"}) {
    r = run_upcycle("sweep --out " + q(dir / "bad") + " " + grid + " --cell" + (index[0] == '=' ? "" : " ") + index);
    CHECK(r.code == 2);
    CHECK_MESSAGE(r.err.find("is out of range: this grid has 6 cells, 0 to 5") != std::string::npos, r.err);
  }
  CHECK(!fs::exists(dir / "bad"));
  r = run_upcycle("sweep --out " + q(dir / "bad") + " " + grid + " --plan --report");
  CHECK(r.code == 1);
  CHECK(r.err.find("give one of --plan, --cell and --report") != std::string::npos);
  r = run_upcycle("sweep --out " + q(dir / "bad") + " " + grid + " --report");
  CHECK(r.code == 2);
  CHECK(r.err.find("no cell of the grid's 6 is done") != std::string::npos);
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

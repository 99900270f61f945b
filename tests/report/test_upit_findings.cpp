// UpIT's pool findings from upcycle_convert.json: the seed assignment's counts and busiest share,
// the checkpoints' seed losses, and distances in weights against in function, by hand.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "report/upit_findings.hpp"
#include "tests/common/fixtures.hpp"

using namespace upcycle;
using namespace upcycle::test;

namespace {

// Two checkpoints and a child of both: weights far from its parents (0.5, 0.7 against 0.2
// between the checkpoints), function close (0.01, 0.03 against 0.08).
void write_convert_report(const fs::path& dir, std::vector<int> seed_counts) {
  fs::create_directories(dir);
  const nlohmann::json j = {
      {"pool", {{{"describe", "checkpoint 0"}, {"checkpoint", 0}},
                {{"describe", "checkpoint 1"}, {"checkpoint", 1}},
                {{"describe", "child of 0 and 1 (0.50/0.50)"}, {"parents", {0, 1}}}}},
      {"distances_after", {{0.0, 0.2, 0.5}, {0.2, 0.0, 0.7}, {0.5, 0.7, 0.0}}},
      {"seed_loss_distances", {{0.0, 0.08, 0.01}, {0.08, 0.0, 0.03}, {0.01, 0.03, 0.0}}},
      {"seed_mean_loss", {1.2, 1.1, 1.15}},
      {"seed_per_expert_lowest_loss", seed_counts}};
  write_file(dir / "upcycle_convert.json", j.dump());
}

}  // namespace

TEST_CASE("upit findings: counts, the checkpoints' losses, and weights against function, by hand") {
  ScratchDir dir;
  write_convert_report(dir / "a", {5, 3, 2});
  const std::string md = upit_pool_findings({dir / "a"});
  CHECK(md.find("checkpoint 0 5, checkpoint 1 3, child of 0 and 1 (0.50/0.50) 2.") != std::string::npos);
  CHECK(md.find("The busiest expert takes 0.50 of them.") != std::string::npos);
  CHECK(md.find("1.2000, 1.1000: each later checkpoint scores the seed data better") != std::string::npos);
  CHECK(md.find("cosine distance 0.200 of the FFN deltas, and 0.0800 mean gap") != std::string::npos);
  CHECK(md.find("cosine distance 0.600 and a seed-loss gap of 0.0200") != std::string::npos);  // means over the two parents
  CHECK(md.find("mostly DARE's random drop") != std::string::npos);
  CHECK(md.find("little to learn") == std::string::npos);
}

TEST_CASE("upit findings: nearly every seed sample to one expert leaves the router little to learn, over repeats") {
  ScratchDir dir;
  write_convert_report(dir / "r0", {95, 3, 2});
  write_convert_report(dir / "r1", {92, 4, 4});
  const std::string md = upit_pool_findings({dir / "r0", dir / "r1", dir / "missing"});
  CHECK(md.find("0.94 (0.92–0.95 over 2 repeats)") != std::string::npos);
  CHECK(md.find("the router pre-optimisation has little to learn") != std::string::npos);
  CHECK(upit_pool_findings({dir / "missing"}).empty());
}

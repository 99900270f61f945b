// What UpIT's conversion did, measured, from each repeat's upcycle_convert.json: where the seed
// samples went (if one expert scores nearly all of them best, the router pre-optimisation has
// little to learn), and how the experts differ in weights (cosine distance of their FFN deltas)
// against in function (router::loss_distances: the mean gap in seed loss per sample), between
// the checkpoints and between the search's children and their parents.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace upcycle {

// Markdown bullets for the conversions in `converted` (each an MoE folder with
// upcycle_convert.json); empty when none of them has a router stage's figures.
std::string upit_pool_findings(const std::vector<std::filesystem::path>& converted);

}  // namespace upcycle

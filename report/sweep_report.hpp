// A sweep's results: sweep.csv (a row per cell), summary.csv (mean and 95% interval over repeats per
// metric, method, experts and data size), pairs.csv (paired differences between methods over
// repeats, with intervals and p-values), plots of exact match and loss against data size
// per method and expert count (means over repeats), and report.md with tables and findings.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "report/repeats.hpp"

namespace upcycle {

// Writes dir/sweep.csv, dir/plots/{exact,loss}.svg and dir/report.md (each complete or not at all).
void write_sweep_report(const std::filesystem::path& dir, const std::vector<RepeatRow>& rows, const std::string& setup);

}  // namespace upcycle

// Results over repeats, as `demo` and `sweep` report them: a row per repeat, method and expert
// count; summary.csv (each arm's mean with its 95% Student-t interval over repeats); pairs.csv
// (paired differences of methods run on the same seeds, with intervals and p-values); and the
// sentences that say only what those intervals show.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "report/method_result.hpp"
#include "report/statistics.hpp"

namespace upcycle {

struct RepeatRow {
  int64_t data = 0;   // training samples
  int repeat = 0;
  uint64_t seed = 0;  // the repeat's seed: data order, the genetic search, router initialisation
  MethodResult result;
};

// A line of tables and plots: a method at an expert count ("dense", "upit E=8").
std::string arm_name(const MethodResult& m);

// "34.2 [31.0, 37.4]": scale × the mean with its 95% interval, `digits` decimals (the mean alone
// for one repeat).
std::string mean_with_interval(const MeanInterval& m, int digits, double scale);

// The held-out sets and the tasks any row was evaluated on, sorted.
std::vector<std::string> heldout_set_names(const std::vector<RepeatRow>& rows);
std::vector<std::string> task_names(const std::vector<RepeatRow>& rows);

// One row per repeat, method and expert count: data,repeat,seed,method,experts,..., then each
// held-out set's and each task's exact match.
std::string rows_csv(const std::vector<RepeatRow>& rows);

// metric,method,experts,data,n,mean,sd,ci_low,ci_high: one line per metric (exact, eval_loss),
// arm and data size; 95% Student t over repeats, empty where one repeat has no interval.
std::string summary_csv(const std::vector<RepeatRow>& rows);

// Two arms at one data size (b dense, or both at one expert count), a − b paired by repeat: the
// same seed on both sides. With a single repeat the exact-match pair falls back to a paired
// bootstrap over the test samples (2,000 seeded resamples), which measures the test set's noise,
// not run-to-run variation.
struct MethodPair {
  std::string metric;  // exact, eval_loss
  MethodResult a, b;   // the first repeat's results: the arms' method and expert count
  int64_t data = 0;
  PairedDifference d;
  bool bootstrap = false;
  // d.p_value adjusted by Holm's step-down method over every pair of the same metric with a p
  // value: many comparisons at 95% each find some "differences" by chance. NaN: no p value.
  double p_holm = std::numeric_limits<double>::quiet_NaN();
};

// Every pair, a ranked before b by pair_rank(), with Holm's adjusted p values.
std::vector<MethodPair> method_pairs(const std::vector<RepeatRow>& rows);

// metric,method_a,method_b,experts,data,n,mean_diff,ci_low,ci_high,p_value,significant,interval,
// p_holm (interval: "t" over repeats or "bootstrap" over test samples).
std::string pairs_csv(const std::vector<MethodPair>& pairs);

// A sentence per pair from its interval alone: "upit − sparse: +1.9 points exact match, 95% CI
// [+0.4, +3.4], 5 repeats, p = 0.02", or "no significant difference (...)" where the interval
// covers 0; no claim where there is no interval; a difference whose Holm-adjusted p is 0.05 or
// more says so. with_data names the data size first. A first line says how many comparisons
// there are and how many would come out significant by chance alone.
std::string pair_sentences(const std::vector<MethodPair>& pairs, bool with_data);

}  // namespace upcycle

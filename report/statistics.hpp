// Intervals over repeats, as experiments report them: a mean with its Student-t interval, and the
// paired difference of two methods run on the same seeds with its interval and a two-sided paired
// t-test (Boost.Math's Student t distribution).
#pragma once
#include <cstdint>
#include <vector>

namespace upcycle {

// n values; low and high are NaN when n < 2 (one run has no interval).
struct MeanInterval {
  int n = 0;
  double mean = 0, sd = 0;  // sd: the sample standard deviation (n − 1)
  double low = 0, high = 0;
};

// mean ± t_{(1+level)/2, n−1} · sd / √n.
MeanInterval mean_interval(const std::vector<double>& values, double level = 0.95);

// a[i] − b[i] over pairs i (the same repeat); p_value of H0: mean difference 0, two-sided.
// NaN interval and p_value, and not significant, when n < 2; a difference the same in every pair
// has sd 0: its interval is that value and it is significant unless it is 0.
struct PairedDifference {
  int n = 0;
  double mean_diff = 0, low = 0, high = 0, p_value = 0;
  bool significant = false;  // the interval excludes 0
};

// std::invalid_argument when a and b differ in length.
PairedDifference paired_difference(const std::vector<double>& a, const std::vector<double>& b, double level = 0.95);

// For a single run: the mean of a[i] − b[i] over test samples i with a paired bootstrap over the
// samples (`resamples` draws of n indices with replacement, seeded): the percentile interval and
// a two-sided p of 2·min(share of draws <= 0, share >= 0). It measures the test set's sampling
// noise only, not run-to-run variation. std::invalid_argument when a and b differ in length or
// are empty.
PairedDifference paired_bootstrap(const std::vector<double>& a, const std::vector<double>& b, int resamples = 2000,
                                  uint64_t seed = 0, double level = 0.95);

}  // namespace upcycle

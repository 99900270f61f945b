// The CUDA suite's main: without a usable GPU every test case exits 77, which ctest reports as
// skipped, with the reason on stdout. Listing the cases (ctest discovers them at build time)
// needs no GPU.
#define DOCTEST_CONFIG_IMPLEMENT
#include "tests/common/doctest_runner.hpp"

#include <cstdio>
#include <string>

#include "cuda/runtime.hpp"

int main(int argc, char** argv) {
  bool listing = false;
  for (int i = 1; i < argc; ++i) listing |= std::string(argv[i]).rfind("--list", 0) == 0;
  std::string reason;
  if (!listing && !upcycle::cuda::available(&reason)) {
    std::printf("skipped: %s\n", reason.c_str());
    return 77;
  }
  return upcycle::test::run_doctest(argc, argv);
}

// Every doctest suite's main but the CUDA one's (tests/common/doctest_runner.hpp).
#define DOCTEST_CONFIG_IMPLEMENT
#include "tests/common/doctest_runner.hpp"

int main(int argc, char** argv) { return upcycle::test::run_doctest(argc, argv); }

// Running a doctest suite under ctest. Each ctest case runs one test case by name
// (--test-case=NAME, written by doctest_discover_tests), so two things must hold or a case
// passes without running: doctest 2.4 splits filters at commas and does not read the "\,"
// escape the discovery writes, so the escape becomes "?" (any one character); and a filter that
// matches no test case is a failure, not a pass (a test case whose name the discovery mangled
// would otherwise never run and never fail).
#pragma once
#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

namespace upcycle::test {

// Counts the test cases that start.
struct StartedCases : doctest::IReporter {
  static inline int started = 0;
  explicit StartedCases(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { ++started; }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

inline int run_doctest(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  bool filtered = false, listing = false;
  for (std::string& a : args) {
    listing |= a.rfind("--list", 0) == 0;
    if (a.rfind("--test-case=", 0) != 0 && a.rfind("-tc=", 0) != 0) continue;
    filtered = true;
    for (size_t at = a.find("\\,"); at != std::string::npos; at = a.find("\\,", at)) a.replace(at, 2, "?");
  }
  std::vector<char*> pointers;
  for (std::string& a : args) pointers.push_back(a.data());
  doctest::Context context(int(pointers.size()), pointers.data());
  const int result = context.run();
  if (result == 0 && filtered && !listing && StartedCases::started == 0 && !context.shouldExit()) {
    std::fprintf(stderr, "no test case matched the --test-case filter (a name the discovery could not pass through?)\n");
    return 1;
  }
  return result;
}

}  // namespace upcycle::test

DOCTEST_REGISTER_LISTENER("started-cases", 1, upcycle::test::StartedCases);

// parallel/ as a build without MPI compiles it (single_process.cpp in place of mpi_processes.cpp):
// a launch of several processes is refused with a message saying why, one process runs alone.
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>

#include "parallel/processes.hpp"

using namespace upcycle;

TEST_CASE("without MPI: a launch of several processes says so, one process runs alone") {
  CHECK_FALSE(have_mpi());
  int argc = 0;
  char** argv = nullptr;
  ::setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  CHECK(launched_processes() == 2);
  try {
    open_processes(&argc, &argv);
    FAIL("a launch of 2 processes was accepted");
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    CHECK_MESSAGE(what.find("launched as 2 processes, but this upcycle was built without MPI") != std::string::npos, what);
  }
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
  CHECK(launched_processes() == 1);
  open_processes(&argc, &argv);
  CHECK(processes().size() == 1);
  CHECK(processes().rank() == 0);
}

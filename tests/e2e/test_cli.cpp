// The `upcycle` command as a user meets it: help, version, exit codes.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>

#include "tests/common/fixtures.hpp"

using namespace upcycle::test;

TEST_CASE("version and help") {
  auto v = run_upcycle("--version");
  CHECK(v.code == 0);
  CHECK(v.out.find("backends: cpu") != std::string::npos);
  CHECK(run_upcycle("--help").code == 0);
  CHECK(run_upcycle("").code == 1);
  for (const char* cmd : {"inspect", "export", "init", "tokenize", "forward", "tune"}) {
    auto h = run_upcycle(std::string(cmd) + " --help");
    CHECK_MESSAGE(h.code == 0, cmd);
    CHECK(h.out.find("Usage: upcycle ") != std::string::npos);
  }
}

TEST_CASE("usage errors exit 1, bad input exits 2") {
  CHECK(run_upcycle("frobnicate").code == 1);
  CHECK(run_upcycle("inspect").code == 1);
  CHECK(run_upcycle("inspect --no-such-option x").code == 1);
  CHECK(run_upcycle("export a").code == 1);
  ScratchDir dir;
  auto r = run_upcycle("inspect '" + (dir / "nothing-here").string() + "'");
  CHECK(r.code == 2);
  CHECK(r.err.find("nothing-here") != std::string::npos);
  write_file(dir / "junk.bin", "this is not a model");
  r = run_upcycle("inspect '" + (dir / "junk.bin").string() + "'");
  CHECK(r.code == 2);
  CHECK(r.err.find("junk.bin") != std::string::npos);
  write_file(dir / "tiny.h5", "xx");  // too short for any magic: the extension decides the reader
  r = run_upcycle("inspect '" + (dir / "tiny.h5").string() + "'");
  CHECK(r.code == 2);
  CHECK(r.err.find("tiny.h5: not an HDF5 file") != std::string::npos);
  CHECK(run_upcycle("export '" + (dir / "junk.bin").string() + "' '" + (dir / "o").string() + "' --dtype q4_0").code == 1);
  CHECK(run_upcycle("export '" + (dir / "junk.bin").string() + "' '" + (dir / "o").string() + "' --shard-size 5XB").code == 1);
}

// The executable needs no CUDA library; --device cuda loads the plugin from beside it and names
// the file when it is not there.
TEST_CASE("the CUDA backend is a plugin beside the executable") {
  ScratchDir dir;
  fs::copy_file(UPCYCLE_BINARY, dir / "upcycle");
  fs::permissions(dir / "upcycle", fs::perms::owner_exec, fs::perm_options::add);
  const std::string alone = "'" + (dir / "upcycle").string() + "' ";
  const std::string out = (dir / "out").string(), err = (dir / "err").string();
  auto run = [&](const std::string& args) {
    const int status = std::system((alone + args + " >'" + out + "' 2>'" + err + "'").c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  };
  REQUIRE(run("--version") == 0);
  const bool with_cuda = read_file(dir / "out").find("backends: cpu cuda") != std::string::npos;
  const int code = run("bench --device cuda");
  if (with_cuda) {
    CHECK(code == 2);
    CHECK(read_file(dir / "err").find("libupcycle_cuda.so") != std::string::npos);
  } else {
    CHECK(code == 1);
    CHECK(read_file(dir / "err").find("built without the CUDA backend") != std::string::npos);
  }
}

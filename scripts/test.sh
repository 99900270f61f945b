#!/usr/bin/env bash
# Builds upcycle and runs every test: installs what is missing (scripts/deps.sh), fetches the
# real model (scripts/fetch-smollm2.sh; without it the tests that need it skip), configures and
# builds in ./build (Release, CUDA when nvcc is found), then runs ctest. Exits non-zero when
# anything fails. Runs from any directory.
#
#   scripts/test.sh                 everything
#   scripts/test.sh -R '^core:'      arguments go to ctest (here: only the core suite)
#
# Environment (all optional): UPCYCLE_BUILD_DIR (default build), UPCYCLE_CUDA (AUTO, ON, OFF),
# CMAKE_BUILD_TYPE (Release), CMAKE_ARGS (more cmake arguments), UPCYCLE_JOBS (build jobs),
# UPCYCLE_TEST_JOBS (ctest jobs, default 2), UPCYCLE_SKIP_DEPS=1, UPCYCLE_SKIP_FETCH=1,
# UPCYCLE_CACHE (where the model is kept, default ~/.cache/upcycle).
set -euo pipefail

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  upcycle_help "$0"
  exit 0
fi
cd "$UPCYCLE_ROOT"
start=$SECONDS

upcycle_build

if [[ ${UPCYCLE_SKIP_FETCH:-0} != 1 ]]; then
  upcycle_say "real model (scripts/fetch-smollm2.sh)"
  if model=$(bash scripts/fetch-smollm2.sh); then
    export UPCYCLE_SMOLLM2_GGUF=$model
  else
    printf 'test: warning: could not fetch SmolLM2-135M-Instruct: the tests that need it will skip\n' >&2
  fi
fi

build_dir=$(upcycle_build_dir)
upcycle_say "ctest --test-dir $build_dir --output-on-failure -j${UPCYCLE_TEST_JOBS:-2} $*"
status=0
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j"${UPCYCLE_TEST_JOBS:-2}" "$@" || status=$?

if ((status == 0)); then
  upcycle_say "all tests passed ($((SECONDS - start)) s)"
else
  upcycle_say "FAILED: ctest exited with $status ($((SECONDS - start)) s)"
fi
exit "$status"
